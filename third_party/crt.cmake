# Provides the AWS CRT target AWS::aws-c-s3.
#
# 1. An installed CRT (clusters often have one): find_package(aws-c-s3 CONFIG), honouring
#    CMAKE_PREFIX_PATH / aws-c-s3_DIR. Set S3TORCH_USE_SYSTEM_CRT=OFF to skip this.
# 2. Otherwise the crt/ bundle of the pinned `awscrt` source distribution from PyPI is built as static,
#    position-independent libraries against the system libcrypto (USE_OPENSSL=ON) and installed into a
#    cache directory keyed by version, compiler and our edits to the sources (in s2n and aws-c-s3, see below),
#    so that later builds (and fresh build dirs) reuse it. No third-party source is committed.

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

option(S3TORCH_USE_SYSTEM_CRT "Use an installed AWS CRT when find_package finds one" ON)
set(S3TORCH_CRT_VERSION "0.38.0" CACHE STRING "awscrt source distribution version to build")

if(DEFINED ENV{S3TORCH_CRT_CACHE})
  set(_crt_cache_root "$ENV{S3TORCH_CRT_CACHE}")
elseif(DEFINED ENV{XDG_CACHE_HOME})
  set(_crt_cache_root "$ENV{XDG_CACHE_HOME}/s3torch")
else()
  set(_crt_cache_root "$ENV{HOME}/.cache/s3torch")
endif()
# Bump when the edits applied to the bundled sources below change: it is part of the cache key.
set(_crt_edits "s2n-default-trust-1;s3-ticket-append-1")
string(MD5 _crt_key "${S3TORCH_CRT_VERSION};${_crt_edits};${CMAKE_C_COMPILER_ID};${CMAKE_C_COMPILER_VERSION};${CMAKE_SYSTEM_PROCESSOR}")
string(SUBSTRING "${_crt_key}" 0 10 _crt_key)
set(_crt_prefix "${_crt_cache_root}/crt-${S3TORCH_CRT_VERSION}-${_crt_key}")

# A build dir configured earlier has cached the package dirs of a bundled build (this one, or an older
# version or set of edits): forget them all. Otherwise the search for an installed CRT below would find
# our own bundled build through the cache and take it for an installed one, and a re-run of setup.sh
# would silently build without the bundled-only features.
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
  if(aws-c-s3_FOUND)
    message(STATUS "s3torch: using installed AWS CRT from ${aws-c-s3_DIR}")
    _s3torch_detect_ticket_append()
    return()
  endif()
endif()

if(NOT EXISTS "${_crt_prefix}/.complete")
  set(_work "${_crt_cache_root}/work-${S3TORCH_CRT_VERSION}-${_crt_key}")
  file(REMOVE_RECURSE "${_work}")
  file(MAKE_DIRECTORY "${_work}")
  set(_sdist "$ENV{S3TORCH_CRT_SDIST}")
  if(NOT _sdist)
    # pip may not be importable inside an isolated build environment: try the interpreter first,
    # then any pip on PATH.
    find_program(_pip NAMES pip3 pip)
    set(_pip_cmds "${Python_EXECUTABLE}|-m|pip" "${_pip}")
    foreach(_cmd IN LISTS _pip_cmds)
      if(NOT _cmd)
        continue()
      endif()
      string(REPLACE "|" ";" _cmd "${_cmd}")
      message(STATUS "s3torch: downloading awscrt==${S3TORCH_CRT_VERSION} sources")
      execute_process(
        COMMAND ${_cmd} download --no-deps --no-binary :all:
                "awscrt==${S3TORCH_CRT_VERSION}" -d "${_work}/dl"
        RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_VARIABLE _err)
      file(GLOB _sdist "${_work}/dl/awscrt-*.tar.gz")
      if(_rc EQUAL 0 AND _sdist)
        break()
      endif()
    endforeach()
  endif()
  if(NOT _sdist)
    message(FATAL_ERROR "s3torch: could not obtain awscrt==${S3TORCH_CRT_VERSION} sources (${_err}). "
                        "Set S3TORCH_CRT_SDIST to a downloaded awscrt sdist, or install the AWS CRT and "
                        "point CMAKE_PREFIX_PATH at it.")
  endif()
  message(STATUS "s3torch: building the AWS CRT (about a minute, once) into ${_crt_prefix}")
  file(ARCHIVE_EXTRACT INPUT "${_sdist}" DESTINATION "${_work}/src")
  file(GLOB _crt_src "${_work}/src/awscrt-*/crt")
  # s2n_init() parses the whole system CA bundle into s2n's process-wide default config: about 12 ms
  # of the first client's creation, in every process, plain-HTTP endpoints included. aws-c-io never
  # uses that config (each TLS context builds its own and loads the trust store there), and a
  # connection left on it would fail verification rather than trust anything. Skip that one load.
  set(_s2n_config "${_crt_src}/s2n/tls/s2n_config.c")
  set(_s2n_load "POSIX_GUARD(s2n_config_load_system_certs(&s2n_default_config));")
  file(READ "${_s2n_config}" _text)
  string(FIND "${_text}" "${_s2n_load}" _at)
  if(_at EQUAL -1)
    message(WARNING "s3torch: s2n's default-config CA load not found; building s2n unmodified")
  else()
    string(REPLACE "${_s2n_load}" "/* s3torch: default config's CA load skipped */" _text "${_text}")
    file(WRITE "${_s2n_config}" "${_text}")
  endif()
  # aws-c-s3 appends every GET part's body to its pool buffer. An optional `append` entry in the
  # ticket vtable lets our pool do that append itself, so that a stream can have chosen object
  # ranges of its parts written straight into their destinations (a DCP load's tensors) while the
  # rest goes to the part buffer: one copy for those bytes and no extra requests (see
  # cpp/src/buffer_pool.cpp). The pinned version has the two anchors; another one fails loudly here.
  set(_s3_dir "${_crt_src}/aws-c-s3")
  set(_vt_old "    struct aws_s3_buffer_ticket *(*release)(struct aws_s3_buffer_ticket *ticket);\n};")
  set(_vt_new "    struct aws_s3_buffer_ticket *(*release)(struct aws_s3_buffer_ticket *ticket);\n\n    /* s3torch: optional. Appends a successful GET part's body bytes `data` to `buf` (the claimed buffer),\n     * advancing buf->len by data->len; the bytes are those of object offset part_range_start + buf->len. */\n    int (*append)(\n        struct aws_s3_buffer_ticket *ticket,\n        struct aws_byte_buf *buf,\n        const struct aws_byte_cursor *data,\n        uint64_t part_range_start);\n};")
  set(_ap_old "    if (s_response_body_append(&request->send_data.response_body, data)) {")
  set(_ap_new "    struct aws_s3_buffer_ticket *s3torch_ticket = request->ticket;\n    bool s3torch_append = successful_response && request->request_type == AWS_S3_REQUEST_TYPE_GET_OBJECT &&\n                          s3torch_ticket != NULL && s3torch_ticket->vtable->append != NULL;\n    if (s3torch_append ? s3torch_ticket->vtable->append(\n                             s3torch_ticket, &request->send_data.response_body, data, request->part_range_start)\n                       : s_response_body_append(&request->send_data.response_body, data)) {")
  foreach(_edit IN ITEMS "include/aws/s3/s3_buffer_pool.h|_vt" "source/s3_meta_request.c|_ap")
    string(REPLACE "|" ";" _edit "${_edit}")
    list(GET _edit 0 _file)
    list(GET _edit 1 _var)
    file(READ "${_s3_dir}/${_file}" _text)
    string(FIND "${_text}" "${${_var}_old}" _at)
    if(_at EQUAL -1)
      message(FATAL_ERROR "s3torch: aws-c-s3 ${_file} lacks the code the ticket-append edit expects")
    endif()
    string(REPLACE "${${_var}_old}" "${${_var}_new}" _text "${_text}")
    file(WRITE "${_s3_dir}/${_file}" "${_text}")
  endforeach()
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
            -DUSE_OPENSSL=ON -DCMAKE_POSITION_INDEPENDENT_CODE=ON
            -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER}
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

list(PREPEND CMAKE_PREFIX_PATH "${_crt_prefix}")
find_package(aws-c-s3 CONFIG REQUIRED PATHS "${_crt_prefix}" NO_DEFAULT_PATH)
message(STATUS "s3torch: using AWS CRT ${S3TORCH_CRT_VERSION} from ${_crt_prefix}")
_s3torch_detect_ticket_append()
if(NOT S3TORCH_CRT_TICKET_APPEND)
  message(FATAL_ERROR "s3torch: the bundled AWS CRT in ${_crt_prefix} lacks the ticket-append edit")
endif()
