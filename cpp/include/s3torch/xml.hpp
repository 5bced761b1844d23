#pragma once
// Just enough XML for S3 responses (ListObjectsV2, Error): element text by tag name, entities decoded.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace s3torch::xml {

// Inner text of the first <tag>...</tag> in doc (raw, not decoded), nullopt if absent.
std::optional<std::string_view> find(std::string_view doc, std::string_view tag);
// Inner text of every top-level-in-doc <tag>...</tag>, in order.
std::vector<std::string_view> find_all(std::string_view doc, std::string_view tag);
// Decodes the five predefined entities and numeric character references.
std::string decode(std::string_view text);
// find() + decode(), "" if absent.
std::string text(std::string_view doc, std::string_view tag);

}  // namespace s3torch::xml
