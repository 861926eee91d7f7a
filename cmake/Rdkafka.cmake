# SPDX-License-Identifier: Apache-2.0
#
# Which librdkafka the build compiles, links and runs against: the imported
# target PkgConfig::RDKAFKA, and EM_RDKAFKA_VERSION ("2.8.0") for tests.
#   EM_LIBRDKAFKA=<prefix>  (default .cache/librdkafka-2.8.0, which
#       scripts/deps.sh builds from Debian 13's source package): that
#       prefix's rdkafka.pc, so its headers come before /usr/include and its
#       lib/ goes into every executable's RUNPATH; nothing loads Debian's
#       /usr/lib copy (2.0.2 skips offsets around pause/resume, fixed in 2.1).
#   EM_LIBRDKAFKA=system  Debian 12's librdkafka-dev (2.0.2) through
#       pkg-config, kept to measure before and after.
# The version is checked here against the headers and the library, and at
# build time in lib/em_kafka.c with the flags every target really gets
# (EM_RDKAFKA_CONFIGURED_VERSION); `--version` prints the one loaded.
include(CheckCSourceCompiles)

set(EM_LIBRDKAFKA "${CMAKE_SOURCE_DIR}/.cache/librdkafka-2.8.0" CACHE STRING
    "librdkafka to build against: an install prefix, relative to the source tree or absolute (scripts/deps.sh builds 2.8.0 into the default), or \"system\" (Debian's package)")

if(EM_LIBRDKAFKA STREQUAL "system")
  set(_em_rdkafka_module rdkafka)
else()
  get_filename_component(_em_rdkafka_prefix "${EM_LIBRDKAFKA}" ABSOLUTE BASE_DIR "${CMAKE_SOURCE_DIR}")
  # The .pc file itself as the module (pkgconf takes a path): only this
  # prefix can answer, and a changed EM_LIBRDKAFKA changes the arguments,
  # which makes pkg_check_modules look again instead of reusing its cache.
  set(_em_rdkafka_module "${_em_rdkafka_prefix}/lib/pkgconfig/rdkafka.pc")
  if(NOT EXISTS "${_em_rdkafka_module}")
    message(FATAL_ERROR
      "EM_LIBRDKAFKA=${EM_LIBRDKAFKA}: no librdkafka installed there (${_em_rdkafka_module} is missing).\n"
      "Run scripts/deps.sh (or scripts/deps.sh --build) to build librdkafka 2.8.0 into it, "
      "or configure with -DEM_LIBRDKAFKA=system to use Debian's package.")
  endif()
endif()
# find_library keeps its answer in the cache; a changed EM_LIBRDKAFKA must not reuse it.
unset(pkgcfg_lib_RDKAFKA_rdkafka CACHE)
pkg_check_modules(RDKAFKA REQUIRED IMPORTED_TARGET "${_em_rdkafka_module}")

# The library linked must be the one next to the .pc file, not a namesake
# found along the default paths.
get_filename_component(_em_rdkafka_libdir "${pkgcfg_lib_RDKAFKA_rdkafka}" DIRECTORY)
if(NOT _em_rdkafka_libdir STREQUAL RDKAFKA_LIBDIR)
  message(FATAL_ERROR "librdkafka: found ${pkgcfg_lib_RDKAFKA_rdkafka}, expected it in ${RDKAFKA_LIBDIR}")
endif()
if(NOT EM_LIBRDKAFKA STREQUAL "system")
  # Every executable loads this copy at run time (the build tree is where
  # they run: tests, bench, scripts/run-local.sh; nothing is installed).
  list(APPEND CMAKE_BUILD_RPATH "${RDKAFKA_LIBDIR}")
endif()

# RD_KAFKA_VERSION as rdkafka.h spells it: 0xMMmmrrff, ff = 0xff for a release.
set(EM_RDKAFKA_VERSION "${RDKAFKA_VERSION}")
if(NOT EM_RDKAFKA_VERSION MATCHES "^([0-9]+)\\.([0-9]+)\\.([0-9]+)$")
  message(FATAL_ERROR "librdkafka: cannot read version '${EM_RDKAFKA_VERSION}' from ${_em_rdkafka_module}")
endif()
math(EXPR _em_rdkafka_hex "(${CMAKE_MATCH_1} << 24) | (${CMAKE_MATCH_2} << 16) | (${CMAKE_MATCH_3} << 8) | 255"
     OUTPUT_FORMAT HEXADECIMAL)
set_property(TARGET PkgConfig::RDKAFKA APPEND PROPERTY
             INTERFACE_COMPILE_DEFINITIONS EM_RDKAFKA_CONFIGURED_VERSION=${_em_rdkafka_hex})

# Headers and library agree with the .pc file, through the target's own
# include path and link line (the result is cached per version).
set(CMAKE_REQUIRED_LIBRARIES PkgConfig::RDKAFKA)
set(CMAKE_REQUIRED_QUIET ON)
string(REPLACE "." "_" _em_rdkafka_var "EM_RDKAFKA_HEADERS_ARE_${EM_RDKAFKA_VERSION}")
check_c_source_compiles("
#include <librdkafka/rdkafka.h>
#if RD_KAFKA_VERSION != ${_em_rdkafka_hex}
#error rdkafka.h is not the version the .pc file names
#endif
int main(void) { return rd_kafka_version() == 0; }" ${_em_rdkafka_var})
unset(CMAKE_REQUIRED_LIBRARIES)
unset(CMAKE_REQUIRED_QUIET)
if(NOT ${_em_rdkafka_var})
  unset(${_em_rdkafka_var} CACHE) # look again on the next configure
  message(FATAL_ERROR "librdkafka ${EM_RDKAFKA_VERSION}: rdkafka.h found through ${_em_rdkafka_module} "
                      "is another version (see CMakeFiles/CMakeError.log)")
endif()
message(STATUS "librdkafka ${EM_RDKAFKA_VERSION} (EM_LIBRDKAFKA=${EM_LIBRDKAFKA}): ${pkgcfg_lib_RDKAFKA_rdkafka}")
