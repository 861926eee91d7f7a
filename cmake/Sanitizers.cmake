# SPDX-License-Identifier: Apache-2.0
#
# EM_SANITIZE=ON instruments every target of ours with ASan and UBSan. UBSan
# findings abort (no recovery) so a test cannot pass over one.
if(EM_SANITIZE)
  set(EM_SAN_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all
                   -fno-omit-frame-pointer)
  add_compile_options(${EM_SAN_FLAGS})
  add_link_options(-fsanitize=address,undefined)
endif()

# EM_FUZZ=ON (scripts/fuzz.sh; CC=clang, a build directory of its own):
# every target of ours gets libFuzzer's coverage instrumentation with ASan
# and UBSan, and tests/fuzz builds the fuzz targets (target em_fuzz).
# EM_FUZZ_PLANTED_BUG (TEST ONLY, with EM_FUZZ): also builds fuzz_records_planted,
# whose em_execution_inspect has an out-of-bounds read planted
# (tests/fuzz/CMakeLists.txt), which the CI mode of scripts/fuzz.sh must find.
option(EM_FUZZ "Build the libFuzzer targets of tests/fuzz (clang only)" OFF)
option(EM_FUZZ_PLANTED_BUG "TEST ONLY: also build fuzz_records_planted, with a decoder bug planted (with EM_FUZZ)" OFF)
if(EM_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer -Wno-unknown-warning-option)
  add_link_options(-fsanitize=address,undefined)
endif()
