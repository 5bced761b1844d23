#include "s3torch/crc32.hpp"

#include <aws/checksums/crc.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define S3TORCH_CRC_FOLD 1
#endif

namespace s3torch {

#ifdef S3TORCH_CRC_FOLD
namespace {

// Folding by carry-less multiplication for the bit-reflected polynomial 0xEDB88320 (Intel's "Fast CRC
// Computation for Generic Polynomials Using PCLMULQDQ"): four 128-bit lanes are folded 64 bytes at a
// time, then into one lane, then reduced to 32 bits (Barrett). The constants are x^k mod P for the
// folding distances, P itself and floor(x^64 / P).
__attribute__((target("pclmul,sse4.1"))) inline __m128i fold_into(__m128i x, __m128i k, __m128i next) {
  __m128i lo = _mm_clmulepi64_si128(x, k, 0x00);
  __m128i hi = _mm_clmulepi64_si128(x, k, 0x11);
  return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
}

// `state` is the running (inverted) CRC; n >= 64 and a multiple of 16.
__attribute__((target("pclmul,sse4.1"))) uint32_t fold(uint32_t state, const uint8_t *p, size_t n) {
  const __m128i by4 = _mm_set_epi64x(0x1c6e41596LL, 0x154442bd4LL);
  const __m128i by1 = _mm_set_epi64x(0x0ccaa009eLL, 0x1751997d0LL);
  const __m128i to32 = _mm_set_epi64x(0, 0x163cd6124LL);
  const __m128i barrett = _mm_set_epi64x(0x1f7011641LL, 0x1db710641LL);
  const __m128i low32 = _mm_set_epi32(0, 0, 0, -1);
  auto load = [](const uint8_t *q) { return _mm_loadu_si128(reinterpret_cast<const __m128i *>(q)); };
  __m128i x1 = _mm_xor_si128(load(p), _mm_cvtsi32_si128(static_cast<int>(state)));
  __m128i x2 = load(p + 16), x3 = load(p + 32), x4 = load(p + 48);
  p += 64;
  n -= 64;
  for (; n >= 64; p += 64, n -= 64) {
    x1 = fold_into(x1, by4, load(p));
    x2 = fold_into(x2, by4, load(p + 16));
    x3 = fold_into(x3, by4, load(p + 32));
    x4 = fold_into(x4, by4, load(p + 48));
  }
  x1 = fold_into(x1, by1, x2);
  x1 = fold_into(x1, by1, x3);
  x1 = fold_into(x1, by1, x4);
  for (; n >= 16; p += 16, n -= 16) x1 = fold_into(x1, by1, load(p));
  __m128i t = _mm_clmulepi64_si128(x1, by1, 0x10);  // 128 -> 64 bits
  x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), t);
  t = _mm_srli_si128(x1, 4);  // 64 -> 32 bits
  x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), to32, 0x00), t);
  t = x1;  // Barrett reduction
  x1 = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), barrett, 0x10);
  x1 = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), barrett, 0x00);
  x1 = _mm_xor_si128(x1, t);
  return static_cast<uint32_t>(_mm_extract_epi32(x1, 1));
}

bool have_clmul() {
  static const bool yes = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  return yes;
}

}  // namespace
#endif

uint32_t crc32(const uint8_t *data, size_t size, uint32_t value) noexcept {
#ifdef S3TORCH_CRC_FOLD
  if (size >= 64 && have_clmul()) {
    size_t bulk = size & ~static_cast<size_t>(15);
    value = ~fold(~value, data, bulk);
    data += bulk;
    size -= bulk;
  }
#endif
  return size ? aws_checksums_crc32_ex(data, size, value) : value;
}

}  // namespace s3torch
