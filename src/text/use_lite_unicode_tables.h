// Unicode tables for the NFKC normaliser of the use-lite tokenizer (generated: use_lite_nfkc_tables.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

namespace xdrec::uselite::tables {

struct Decomposition {
  char32_t cp;
  uint16_t offset;  // into kDecompositionData
  uint8_t length;
};

struct Composition {
  char32_t first, second, composite;
};

extern const uint32_t kCombiningClass[];  // sorted (cp << 8) | class
extern const size_t kCombiningClassSize;
extern const Decomposition kDecomposition[];  // sorted by cp
extern const size_t kDecompositionSize;
extern const char32_t kDecompositionData[];
extern const Composition kComposition[];  // sorted by (first, second)
extern const size_t kCompositionSize;

}  // namespace xdrec::uselite::tables
