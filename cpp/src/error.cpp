#include "s3torch/error.hpp"

#include <aws/common/error.h>
#include <aws/s3/s3.h>

#include "s3torch/xml.hpp"

namespace s3torch {

S3Error make_error(const std::string &operation, const std::string &bucket, const std::string &key,
                   int crt_error, int status, const std::string &error_body,
                   const std::string &request_id_header) {
  std::string code = xml::text(error_body, "Code");
  std::string message = xml::text(error_body, "Message");
  std::string request_id = xml::text(error_body, "RequestId");
  if (request_id.empty()) request_id = request_id_header;
  if (code.empty() && status == 404) code = "NotFound";
  if (code.empty() && status == 403) code = "AccessDenied";
  if (code.empty() && crt_error == AWS_ERROR_S3_INTERNAL_ERROR && status == 400) {
    // Our CRT patch 0004 retries a 400 only for a damaged body (BadDigest and kin), and the CRT keeps
    // no error document once it gives up on a retried request.
    code = "BadDigest";
    message = "the server found the request body damaged (its checksum did not match) on every attempt";
  }
  if (code.empty() && crt_error != 0 && (status == 0 || crt_error != AWS_ERROR_S3_INVALID_RESPONSE_STATUS)) {
    // No error document: the CRT's own classification (with a status: it gave up on a retryable one).
    code = aws_error_name(crt_error);
    if (status != 0 && message.empty()) message = aws_error_str(crt_error);
  }

  std::string where = "s3://" + bucket;
  if (!key.empty()) where += "/" + key;
  std::string text = operation + " " + where + " failed: ";
  if (status != 0) {
    text += code.empty() ? "HTTP " + std::to_string(status) : code + " (HTTP " + std::to_string(status) + ")";
    if (!message.empty()) text += ": " + message;
  } else {
    text += code;
    if (crt_error != 0) text += std::string(": ") + aws_error_str(crt_error);
  }
  if (!request_id.empty()) text += " [request id " + request_id + "]";
  return S3Error(text, operation, bucket, key, status, code, request_id, crt_error);
}

}  // namespace s3torch
