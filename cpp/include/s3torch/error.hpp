#pragma once
// One error type for every failure of the core: CRT error codes and S3 error responses alike.
#include <stdexcept>
#include <string>

namespace s3torch {

struct S3Error : std::runtime_error {
  S3Error(std::string message, std::string operation, std::string bucket, std::string key, int status,
          std::string code, std::string request_id, int crt_error)
      : std::runtime_error(std::move(message)),
        operation(std::move(operation)),
        bucket(std::move(bucket)),
        key(std::move(key)),
        status(status),
        code(std::move(code)),
        request_id(std::move(request_id)),
        crt_error(crt_error) {}

  std::string operation;
  std::string bucket;
  std::string key;
  int status;           // HTTP status, 0 when no response was received
  std::string code;     // S3 error code (NoSuchKey, ...) or CRT error name
  std::string request_id;
  int crt_error;        // aws_last_error() style code, 0 for pure S3 errors
};

// Built from what a finished meta request reports; never throws itself.
S3Error make_error(const std::string &operation, const std::string &bucket, const std::string &key,
                   int crt_error, int status, const std::string &error_body,
                   const std::string &request_id_header);

// For misuse detected by the core itself (closed stream, bad range, ...).
struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

}  // namespace s3torch
