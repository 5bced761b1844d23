#pragma once
// zlib's CRC-32 (the zip format's), continuing from `value` as zlib's crc32() does. Uses carry-less
// multiplication folding where the CPU has it: 512-bit (VPCLMULQDQ, about 65 GB/s on cache-hot data)
// or 128-bit (PCLMULQDQ, about 20 GB/s), against about 3.6 for table code; so a save can checksum each
// slice of a tensor just before copying it into the upload.
#include <cstddef>
#include <cstdint>

namespace s3torch {

uint32_t crc32(const uint8_t *data, size_t size, uint32_t value = 0) noexcept;

// The implementations crc32() chooses from (the fastest this CPU runs), for tests to check each.
enum class Crc32Kernel { kTable, kPclmul, kVpclmul };
bool crc32_kernel_available(Crc32Kernel kernel) noexcept;
// With `kernel` where this CPU has it (table code where it does not).
uint32_t crc32_with(Crc32Kernel kernel, const uint8_t *data, size_t size, uint32_t value = 0) noexcept;

}  // namespace s3torch
