# Provides the AWS CRT target AWS::aws-c-s3.
#
# Default: the crt/ bundle of the pinned `awscrt` source distribution from PyPI (its SHA-256 checked),
# with our reviewed edits (third_party/patches/*.patch) applied strictly, built as static,
# position-independent libraries against the system libcrypto (USE_OPENSSL=ON) and installed into a cache
# directory keyed by version, patches, compiler and crypto library, so that later builds (and fresh build
# dirs) reuse it. A file lock makes concurrent builds wait for each other instead of sharing a work dir.
# No third-party source is committed. Offline: set S3TORCH_CRT_SDIST to the awscrt sdist file.
# -DS3TORCH_CRT_AWSLC=ON: the bundle's aws-lc is built too and linked statically (USE_OPENSSL=OFF) instead of
# the system libcrypto, so the extension needs nothing but glibc (scripts/build_wheel.sh's zig mode).
#
# -DS3TORCH_USE_SYSTEM_CRT=ON: an installed CRT instead (find_package(aws-c-s3 CONFIG), honouring
# CMAKE_PREFIX_PATH / aws-c-s3_DIR), checked at configure time for every feature our sources use. Without
# our ticket-append patch it builds without scatter (S3Client.scatter_supported is False).

# Our sources use the ticket-append entry (scatter) only when the CRT found has it: decided from the
# header actually compiled against, not from how it was found.
function(_s3torch_detect_ticket_append)
  set(_has OFF)
  get_target_property(_incs AWS::aws-c-s3 INTERFACE_INCLUDE_DIRECTORIES)
  foreach(_inc IN LISTS _incs)
    if(EXISTS "${_inc}/aws/s3/s3_buffer_pool.h")
      file(READ "${_inc}/aws/s3/s3_buffer_pool.h" _hdr)
      string(FIND "${_hdr}" "s3torch: optional. Appends" _at)
      if(NOT _at EQUAL -1)
        set(_has ON)
      endif()
    endif()
  endforeach()
  message(STATUS "s3torch: ticket-append (scatter) support: ${_has}")
  set(S3TORCH_CRT_TICKET_APPEND ${_has} PARENT_SCOPE)
endfunction()

# Compiles (no link) one snippet per CRT feature our sources use, against AWS::aws-c-s3; fails the
# configure naming each missing one. For an installed CRT, whose version its CMake package does not say.
function(_s3torch_check_crt_features)
  include(CheckSourceCompiles)
  set(CMAKE_REQUIRED_LIBRARIES AWS::aws-c-s3)
  set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
  set(CMAKE_REQUIRED_QUIET ON)
  set(_pre "#include <aws/s3/s3_client.h>\n#include <aws/s3/s3_buffer_pool.h>\nint probe(void) {\n  struct aws_s3_client_config c = {0};\n  struct aws_s3_meta_request_options o = {0};\n  (void)c; (void)o;\n")
  # "name|code", with % for the semicolons a CMake list cannot hold.
  set(_features
    "custom buffer pool (buffer_pool_factory_fn, aws_s3_buffer_pool_vtable)|c.buffer_pool_factory_fn = 0% c.buffer_pool_user_data = 0% struct aws_s3_buffer_pool_vtable v = {0}% (void)v% aws_s3_buffer_ticket_acquire(0)%"
    "read backpressure (enable_read_backpressure, initial_read_window)|c.enable_read_backpressure = true% c.initial_read_window = 1% aws_s3_meta_request_increment_read_window(0, 1)%"
    "asynchronous upload writes (send_using_async_writes, aws_s3_meta_request_write)|o.send_using_async_writes = true% (void)aws_s3_meta_request_write%"
    "connection monitoring (monitoring_options)|c.monitoring_options = 0%"
    "checksum configuration (checksum_config, full-object upload and per-response download checksums)|o.checksum_config = 0% struct aws_s3_checksum_config k = {0}% k.full_object_checksum_callback = 0% k.response_checksum_validation_mode = AWS_SCVM_REQUEST_ONLY% (void)k%"
    "memory limit (memory_limit_in_bytes, aws_s3_default_memory_limit_for_throughput)|c.memory_limit_in_bytes = 1% (void)aws_s3_default_memory_limit_for_throughput%"
    "request metrics (aws_s3_request_metrics_get_request_id)|(void)aws_s3_request_metrics_get_request_id%")
  set(_missing)
  set(_n 0)
  foreach(_feature IN LISTS _features)
    string(FIND "${_feature}" "|" _bar)
    string(SUBSTRING "${_feature}" 0 ${_bar} _name)
    math(EXPR _bar "${_bar} + 1")
    string(SUBSTRING "${_feature}" ${_bar} -1 _code)
    string(REPLACE "%" ";" _code "${_code}")
    math(EXPR _n "${_n} + 1")
    unset(_S3TORCH_CRT_HAS_${_n} CACHE)
    check_source_compiles(C "${_pre}  ${_code}\n  return 0;\n}\n" _S3TORCH_CRT_HAS_${_n})
    if(NOT _S3TORCH_CRT_HAS_${_n})
      list(APPEND _missing "${_name}")
    endif()
  endforeach()
  if(_missing)
    list(JOIN _missing "\n  - " _list)
    message(FATAL_ERROR "s3torch: the installed AWS CRT (${aws-c-s3_DIR}) lacks features s3torch needs:\n"
                        "  - ${_list}\n"
                        "Install a newer CRT (the awscrt ${S3TORCH_CRT_VERSION} bundle has them all), or drop "
                        "-DS3TORCH_USE_SYSTEM_CRT=ON to build the bundled, pinned one.")
  endif()
  message(STATUS "s3torch: the installed AWS CRT has every feature s3torch needs")
endfunction()

option(S3TORCH_USE_SYSTEM_CRT "Build against an installed AWS CRT instead of the bundled, pinned one" OFF)
set(S3TORCH_CRT_VERSION "0.38.0" CACHE STRING "awscrt source distribution version to build")
option(S3TORCH_CRT_AWSLC "Build the bundled aws-lc into the CRT instead of using the system libcrypto" OFF)
# The SHA-256 of the pinned awscrt sdist. Building another version needs its hash and patches that apply.
set(_crt_pinned_sha256 "4a8423c4a76390c6e5c4f386e3e367dccdcf67d6d1a0bc1c59776bb14cdc2ad9")
if(S3TORCH_CRT_VERSION STREQUAL "0.38.0")
  set(S3TORCH_CRT_SHA256 "${_crt_pinned_sha256}" CACHE STRING "SHA-256 of the awscrt sdist")
elseif(NOT S3TORCH_CRT_SHA256)
  message(FATAL_ERROR "s3torch: S3TORCH_CRT_VERSION=${S3TORCH_CRT_VERSION} needs S3TORCH_CRT_SHA256 "
                      "(the SHA-256 of that awscrt sdist, from PyPI)")
endif()

if(DEFINED ENV{S3TORCH_CRT_CACHE})
  set(_crt_cache_root "$ENV{S3TORCH_CRT_CACHE}")
elseif(DEFINED ENV{XDG_CACHE_HOME})
  set(_crt_cache_root "$ENV{XDG_CACHE_HOME}/s3torch")
else()
  set(_crt_cache_root "$ENV{HOME}/.cache/s3torch")
endif()

# A build dir configured earlier has cached the package dirs of a bundled build (this one, or an older
# version or set of patches): forget them all. Otherwise find_package would reuse a stale bundled build,
# or, with S3TORCH_USE_SYSTEM_CRT, take our own bundled build for an installed one.
get_cmake_property(_cache_vars CACHE_VARIABLES)
foreach(_var IN LISTS _cache_vars)
  if(_var MATCHES "_DIR$")
    string(FIND "${${_var}}" "${_crt_cache_root}/crt-" _in_cache)
    if(_in_cache EQUAL 0)
      unset(${_var} CACHE)
    endif()
  endif()
endforeach()

if(S3TORCH_USE_SYSTEM_CRT)
  find_package(aws-c-s3 CONFIG QUIET)
  if(NOT aws-c-s3_FOUND)
    message(FATAL_ERROR "s3torch: -DS3TORCH_USE_SYSTEM_CRT=ON, but no installed AWS CRT was found "
                        "(aws-c-s3's CMake package). Point CMAKE_PREFIX_PATH or aws-c-s3_DIR at it, or drop "
                        "the option to build the bundled one.")
  endif()
  message(STATUS "s3torch: using installed AWS CRT from ${aws-c-s3_DIR}")
  _s3torch_check_crt_features()
  _s3torch_detect_ticket_append()
  if(NOT S3TORCH_CRT_TICKET_APPEND)
    message(WARNING "s3torch: the installed AWS CRT lacks the ticket-append patch "
                    "(third_party/patches/0002-aws-c-s3-ticket-append.patch): building without scatter, "
                    "so DCP loads copy tensor bytes once more (S3Client.scatter_supported is False)")
  endif()
  return()
endif()

# The cache key: everything that changes the built libraries.
if(S3TORCH_CRT_AWSLC)
  set(_crt_crypto_args -DUSE_OPENSSL=OFF)
  # The compiler may be a wrapper script (scripts/zig/cc picks the glibc to target): key on its contents.
  file(MD5 "${CMAKE_C_COMPILER}" _cc_md5)
  set(_crt_crypto_key "aws-lc;${CMAKE_C_COMPILER};${_cc_md5}")
else()
  find_package(OpenSSL COMPONENTS Crypto)
  if(NOT OPENSSL_CRYPTO_LIBRARY)
    message(FATAL_ERROR "s3torch: the bundled AWS CRT is built against the system's OpenSSL libcrypto, and "
                        "none was found: install its development files (Debian/Ubuntu: libssl-dev; "
                        "RHEL/Fedora: openssl-devel), or set OPENSSL_ROOT_DIR.")
  endif()
  set(_crt_crypto_args -DUSE_OPENSSL=ON)
  set(_crt_crypto_key "${OPENSSL_VERSION};${OPENSSL_CRYPTO_LIBRARY}")
endif()
file(GLOB _crt_patches "${CMAKE_CURRENT_LIST_DIR}/patches/*.patch")
list(SORT _crt_patches)
set(_crt_key_text "${S3TORCH_CRT_VERSION};${S3TORCH_CRT_SHA256};${CMAKE_C_COMPILER_ID};${CMAKE_C_COMPILER_VERSION}")
string(APPEND _crt_key_text ";${CMAKE_SYSTEM_PROCESSOR};${_crt_crypto_key}")
foreach(_patch IN LISTS _crt_patches)
  file(READ "${_patch}" _text)
  string(APPEND _crt_key_text ";${_text}")
endforeach()
string(MD5 _crt_key "${_crt_key_text}")
string(SUBSTRING "${_crt_key}" 0 10 _crt_key)
set(_crt_prefix "${_crt_cache_root}/crt-${S3TORCH_CRT_VERSION}-${_crt_key}")

# Two builds at once (pip installs in parallel, two checkouts) would wipe each other's work dir: the
# second waits here, then finds the first one's result.
file(MAKE_DIRECTORY "${_crt_cache_root}")
file(LOCK "${_crt_prefix}.lock" GUARD FILE TIMEOUT 3600 RESULT_VARIABLE _lock_rc)
if(NOT _lock_rc EQUAL 0)
  message(FATAL_ERROR "s3torch: could not lock ${_crt_prefix}.lock: ${_lock_rc}")
endif()

# Returns in `out` the path of the pinned awscrt sdist: S3TORCH_CRT_SDIST if set, else the copy kept in the
# cache, else downloaded with pip (and kept). Every one is checked against the pinned SHA-256.
function(_s3torch_crt_sdist work out)
  set(_kept "${_crt_cache_root}/awscrt-${S3TORCH_CRT_VERSION}.tar.gz")
  set(_sdist "$ENV{S3TORCH_CRT_SDIST}")
  set(_from "S3TORCH_CRT_SDIST")
  if(NOT _sdist AND EXISTS "${_kept}")
    file(SHA256 "${_kept}" _hash)
    if(_hash STREQUAL S3TORCH_CRT_SHA256)
      set(${out} "${_kept}" PARENT_SCOPE)
      return()
    endif()
    file(REMOVE "${_kept}")
  endif()
  if(NOT _sdist)
    set(_from "pip download")
    # pip may not be importable inside an isolated build environment: try the interpreter first,
    # then any pip on PATH.
    find_program(_pip NAMES pip3 pip)
    set(_pip_cmds "${Python_EXECUTABLE}|-m|pip" "${_pip}")
    set(_err "no pip found")
    foreach(_cmd IN LISTS _pip_cmds)
      if(NOT _cmd)
        continue()
      endif()
      string(REPLACE "|" ";" _cmd "${_cmd}")
      message(STATUS "s3torch: downloading awscrt==${S3TORCH_CRT_VERSION} sources")
      execute_process(
        COMMAND ${_cmd} download --no-deps --no-binary :all: "awscrt==${S3TORCH_CRT_VERSION}" -d "${work}/dl"
        RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_VARIABLE _err)
      file(GLOB _sdist "${work}/dl/awscrt-*.tar.gz")
      if(_rc EQUAL 0 AND _sdist)
        break()
      endif()
    endforeach()
    if(NOT _sdist)
      string(STRIP "${_err}" _err)
      message(FATAL_ERROR "s3torch: could not download the awscrt==${S3TORCH_CRT_VERSION} source archive "
                          "from the package index:\n${_err}\n"
                          "Offline: download awscrt-${S3TORCH_CRT_VERSION}.tar.gz on a machine with access "
                          "(pip download --no-deps --no-binary :all: awscrt==${S3TORCH_CRT_VERSION}) and set "
                          "S3TORCH_CRT_SDIST to its path. Or build against an installed CRT with "
                          "-DS3TORCH_USE_SYSTEM_CRT=ON.")
    endif()
  endif()
  if(NOT EXISTS "${_sdist}")
    message(FATAL_ERROR "s3torch: S3TORCH_CRT_SDIST=${_sdist} does not exist")
  endif()
  file(SHA256 "${_sdist}" _hash)
  if(NOT _hash STREQUAL S3TORCH_CRT_SHA256)
    message(FATAL_ERROR "s3torch: ${_sdist} (from ${_from}) has SHA-256 ${_hash}, not the pinned "
                        "${S3TORCH_CRT_SHA256} of awscrt-${S3TORCH_CRT_VERSION}.tar.gz: refusing to build it")
  endif()
  if(NOT _sdist STREQUAL _kept)
    file(COPY_FILE "${_sdist}" "${_kept}" ONLY_IF_DIFFERENT)
  endif()
  set(${out} "${_sdist}" PARENT_SCOPE)
endfunction()

if(NOT EXISTS "${_crt_prefix}/.complete")
  set(_work "${_crt_cache_root}/work-${S3TORCH_CRT_VERSION}-${_crt_key}")
  file(REMOVE_RECURSE "${_work}")
  file(MAKE_DIRECTORY "${_work}")
  _s3torch_crt_sdist("${_work}" _sdist)
  message(STATUS "s3torch: building the AWS CRT (a few minutes, once) into ${_crt_prefix}")
  file(ARCHIVE_EXTRACT INPUT "${_sdist}" DESTINATION "${_work}/src")
  file(GLOB _crt_src "${_work}/src/awscrt-*/crt")
  execute_process(
    COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_LIST_DIR}/apply_patches.py" "${_crt_src}" ${_crt_patches}
    RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "s3torch: our patches do not apply to awscrt ${S3TORCH_CRT_VERSION}:\n${_err}")
  endif()
  string(STRIP "${_out}" _out)
  string(REPLACE "\n" "; " _out "${_out}")
  message(STATUS "s3torch: ${_out}")
  include(ProcessorCount)
  ProcessorCount(_ncpu)
  if(_ncpu EQUAL 0)
    set(_ncpu 2)
  endif()
  set(_gen_args)
  find_program(_ninja ninja)
  if(_ninja)
    set(_gen_args -G Ninja)
  endif()
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -S "${_crt_src}" -B "${_work}/build" ${_gen_args}
            -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DBUILD_SHARED_LIBS=OFF
            ${_crt_crypto_args} -DCMAKE_POSITION_INDEPENDENT_CODE=ON
            -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
            -DCMAKE_AR=${CMAKE_AR} -DCMAKE_RANLIB=${CMAKE_RANLIB}
            -DCMAKE_INSTALL_PREFIX=${_crt_prefix} -DCMAKE_INSTALL_LIBDIR=lib
    RESULT_VARIABLE _rc OUTPUT_FILE "${_work}/configure.log" ERROR_FILE "${_work}/configure.log")
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "s3torch: configuring the AWS CRT failed, see ${_work}/configure.log")
  endif()
  execute_process(
    COMMAND "${CMAKE_COMMAND}" --build "${_work}/build" --parallel ${_ncpu}
    RESULT_VARIABLE _rc OUTPUT_FILE "${_work}/build.log" ERROR_FILE "${_work}/build.log")
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "s3torch: building the AWS CRT failed, see ${_work}/build.log")
  endif()
  execute_process(COMMAND "${CMAKE_COMMAND}" --install "${_work}/build"
                  RESULT_VARIABLE _rc OUTPUT_QUIET)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "s3torch: installing the AWS CRT failed")
  endif()
  file(WRITE "${_crt_prefix}/.complete" "${S3TORCH_CRT_VERSION}\n")
  file(REMOVE_RECURSE "${_work}")
endif()
file(LOCK "${_crt_prefix}.lock" RELEASE)

list(PREPEND CMAKE_PREFIX_PATH "${_crt_prefix}")
find_package(aws-c-s3 CONFIG REQUIRED PATHS "${_crt_prefix}" NO_DEFAULT_PATH)
message(STATUS "s3torch: using AWS CRT ${S3TORCH_CRT_VERSION} from ${_crt_prefix}")
_s3torch_detect_ticket_append()
if(NOT S3TORCH_CRT_TICKET_APPEND)
  message(FATAL_ERROR "s3torch: the bundled AWS CRT in ${_crt_prefix} lacks the ticket-append patch")
endif()
