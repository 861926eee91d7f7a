# SPDX-License-Identifier: Apache-2.0
#
# The curated warning list, in one place. Every target of ours gets it through
# em_warnings(target); generated protobuf-c code gets only the basic set.
set(EM_WARNINGS
  -Wall -Wextra -Wpedantic
  -Wshadow -Wpointer-arith -Wcast-qual -Wwrite-strings
  -Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition
  -Wformat=2 -Wformat-truncation=1 -Wundef -Wvla -Wdouble-promotion
  -Wnull-dereference -Wimplicit-fallthrough -Wmissing-declarations
  -Wno-unused-parameter)

function(em_warnings target)
  target_compile_options(${target} PRIVATE ${EM_WARNINGS})
  if(EM_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
