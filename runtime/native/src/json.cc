#include "json.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace ditforge {
namespace json {

namespace {

struct Parser {
  const char* s;
  size_t n, p = 0;
  int depth = 0;

  [[noreturn]] void fail(const std::string& what) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p && i < n; ++i) {
      if (s[i] == '\n') { ++line; col = 1; } else { ++col; }
    }
    throw ParseError("invalid JSON at line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + what);
  }
  void ws() {
    while (p < n && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r')) ++p;
  }
  bool lit(const char* w) {
    size_t l = std::strlen(w);
    if (p + l <= n && std::memcmp(s + p, w, l) == 0) { p += l; return true; }
    return false;
  }
  static void utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) out += char(cp);
    else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
    else { out += char(0xF0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3F)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
  }
  uint32_t hex4() {
    if (p + 4 > n) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s[p++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    return v;
  }
  std::string str() {
    ++p;  // opening quote
    std::string out;
    for (;;) {
      if (p >= n) fail("unterminated string");
      char c = s[p++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') { out += c; continue; }
      if (p >= n) fail("unterminated escape");
      char e = s[p++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && p + 1 < n && s[p] == '\\' && s[p + 1] == 'u') {
            p += 2;
            uint32_t lo = hex4();
            if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            else fail("bad surrogate pair");
          }
          utf8(out, cp);
          break;
        }
        default: fail(std::string("bad escape \\") + e);
      }
    }
  }
  Value value() {
    ws();
    if (p >= n) fail("unexpected end of input");
    Value v;
    char c = s[p];
    if (c == '{') {
      if (++depth > 256) fail("nesting too deep");
      v.type = Value::Object;
      ++p; ws();
      if (p < n && s[p] == '}') { ++p; --depth; return v; }
      for (;;) {
        ws();
        if (p >= n || s[p] != '"') fail("expected a string key");
        std::string k = str();
        ws();
        if (p >= n || s[p] != ':') fail("expected ':'");
        ++p;
        v.obj.emplace_back(std::move(k), value());
        ws();
        if (p < n && s[p] == ',') { ++p; continue; }
        if (p < n && s[p] == '}') { ++p; break; }
        fail("expected ',' or '}'");
      }
      --depth;
    } else if (c == '[') {
      if (++depth > 256) fail("nesting too deep");
      v.type = Value::Array;
      ++p; ws();
      if (p < n && s[p] == ']') { ++p; --depth; return v; }
      for (;;) {
        v.arr.push_back(value());
        ws();
        if (p < n && s[p] == ',') { ++p; continue; }
        if (p < n && s[p] == ']') { ++p; break; }
        fail("expected ',' or ']'");
      }
      --depth;
    } else if (c == '"') {
      v.type = Value::String;
      v.str = str();
    } else if (lit("true")) { v.type = Value::Bool; v.b = true; }
    else if (lit("false")) { v.type = Value::Bool; v.b = false; }
    else if (lit("null")) { v.type = Value::Null; }
    else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t st = p;
      if (s[p] == '-') ++p;
      if (p >= n || !(s[p] >= '0' && s[p] <= '9')) fail("bad number");
      while (p < n && ((s[p] >= '0' && s[p] <= '9') || s[p] == '.' || s[p] == 'e' || s[p] == 'E' || s[p] == '+' || s[p] == '-')) ++p;
      std::string tok(s + st, p - st);
      char* end = nullptr;
      v.type = Value::Number;
      v.num = std::strtod(tok.c_str(), &end);
      if (!end || *end != '\0') fail("bad number '" + tok + "'");
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }
};

}  // namespace

Value parse(const std::string& text) {
  Parser ps{text.data(), text.size()};
  Value v = ps.value();
  ps.ws();
  if (ps.p != ps.n) ps.fail("trailing characters after the JSON value");
  return v;
}

}  // namespace json
}  // namespace ditforge
