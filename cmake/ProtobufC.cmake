# SPDX-License-Identifier: Apache-2.0
#
# em_protobuf_c(SRCS_VAR DIR_VAR PROTO_ROOT file.proto...) generates protobuf-c
# sources into the build tree at build time; the generated code is never
# committed.
find_program(EM_PROTOC protoc REQUIRED)
find_program(EM_PROTOC_GEN_C protoc-gen-c REQUIRED)

function(em_protobuf_c srcs_var dir_var root)
  set(out ${CMAKE_BINARY_DIR}/gen)
  set(srcs)
  foreach(proto ${ARGN})
    string(REGEX REPLACE "\\.proto$" "" base ${proto})
    set(c ${out}/${base}.pb-c.c)
    set(h ${out}/${base}.pb-c.h)
    add_custom_command(
      OUTPUT ${c} ${h}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
      COMMAND ${EM_PROTOC} --plugin=protoc-gen-c=${EM_PROTOC_GEN_C}
              --c_out=${out} -I ${root} ${root}/${proto}
      DEPENDS ${root}/${proto}
      COMMENT "protobuf-c: ${proto}")
    list(APPEND srcs ${c})
  endforeach()
  set(${srcs_var} ${srcs} PARENT_SCOPE)
  set(${dir_var} ${out} PARENT_SCOPE)
endfunction()
