#include "s3torch/xml.hpp"

#include <cstdlib>

namespace s3torch::xml {

namespace {
// Position of "<tag>" or "<tag attr...>" at or after `from`; sets `content` to just past '>'.
size_t open_tag(std::string_view doc, std::string_view tag, size_t from, size_t &content, bool &empty) {
  while (true) {
    size_t p = doc.find('<', from);
    if (p == std::string_view::npos) return p;
    size_t q = p + 1;
    if (doc.compare(q, tag.size(), tag) == 0) {
      size_t r = q + tag.size();
      if (r < doc.size() && (doc[r] == '>' || doc[r] == ' ' || doc[r] == '/')) {
        size_t gt = doc.find('>', r);
        if (gt == std::string_view::npos) return std::string_view::npos;
        empty = doc[gt - 1] == '/';
        content = gt + 1;
        return p;
      }
    }
    from = q;
  }
}
}  // namespace

std::optional<std::string_view> find(std::string_view doc, std::string_view tag) {
  size_t content = 0;
  bool empty = false;
  size_t p = open_tag(doc, tag, 0, content, empty);
  if (p == std::string_view::npos) return std::nullopt;
  if (empty) return std::string_view();
  std::string close = "</" + std::string(tag) + ">";
  size_t e = doc.find(close, content);
  if (e == std::string_view::npos) return std::nullopt;
  return doc.substr(content, e - content);
}

std::vector<std::string_view> find_all(std::string_view doc, std::string_view tag) {
  std::vector<std::string_view> out;
  std::string close = "</" + std::string(tag) + ">";
  size_t from = 0;
  while (true) {
    size_t content = 0;
    bool empty = false;
    size_t p = open_tag(doc, tag, from, content, empty);
    if (p == std::string_view::npos) break;
    if (empty) {
      out.emplace_back();
      from = content;
      continue;
    }
    size_t e = doc.find(close, content);
    if (e == std::string_view::npos) break;
    out.push_back(doc.substr(content, e - content));
    from = e + close.size();
  }
  return out;
}

static void append_utf8(std::string &out, unsigned long cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    size_t semi = s.find(';', i);
    if (semi == std::string_view::npos) {
      out += s[i];
      continue;
    }
    std::string_view ent = s.substr(i + 1, semi - i - 1);
    if (ent == "amp") out += '&';
    else if (ent == "lt") out += '<';
    else if (ent == "gt") out += '>';
    else if (ent == "quot") out += '"';
    else if (ent == "apos") out += '\'';
    else if (!ent.empty() && ent[0] == '#') {
      std::string num(ent.substr(1));
      unsigned long cp = (!num.empty() && (num[0] == 'x' || num[0] == 'X'))
                             ? std::strtoul(num.c_str() + 1, nullptr, 16)
                             : std::strtoul(num.c_str(), nullptr, 10);
      append_utf8(out, cp);
    } else {
      out.append(s.substr(i, semi - i + 1));
    }
    i = semi;
  }
  return out;
}

std::string text(std::string_view doc, std::string_view tag) {
  auto t = find(doc, tag);
  return t ? decode(*t) : std::string();
}

}  // namespace s3torch::xml
