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
