// Model files: tensors in safetensors format plus a JSON manifest, both written atomically.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "xdrec/common.h"

namespace xdrec {

enum class DType { F32, I32, U32, I64, U64, U8, I8, F16 };

size_t dtype_size(DType d);  // bytes per element

struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  static Tensor from_f32(std::vector<int64_t> shape, const float* data);
  static Tensor from_u32(std::vector<int64_t> shape, const uint32_t* data);
  static Tensor from_u64(std::vector<int64_t> shape, const uint64_t* data);
  static Tensor from_matrix(const Matrix& m);
  static Tensor from_csr_part(const std::vector<uint64_t>& v);
  size_t numel() const;
  // Typed copies out; throw Error naming the tensor when the dtype or element count is wrong.
  std::vector<float> to_f32(const std::string& name) const;
  std::vector<uint32_t> to_u32(const std::string& name) const;
  std::vector<uint64_t> to_u64(const std::string& name) const;
  Matrix to_matrix(const std::string& name) const;  // requires a 2-D F32 tensor
};

using TensorMap = std::map<std::string, Tensor>;

// Writes a .safetensors file (8-byte little-endian header length, JSON header, raw data), atomically.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// Reads a .safetensors file; throws Error with the path and reason on a truncated or malformed file.
TensorMap load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

// Helpers for Csr <-> tensors under a name prefix ("<prefix>.indptr", ".indices", ".values", ".shape").
void put_csr(TensorMap& t, const std::string& prefix, const Csr& m);
Csr get_csr(const TensorMap& t, const std::string& prefix);
const Tensor& get_tensor(const TensorMap& t, const std::string& name);  // throws Error if missing

// ---- Compressed storage of float matrices ---------------------------------------------------------------
//
// kInt8: symmetric per-row quantisation, q = round(x / s) with s = max|x_row| / 127, stored as an I8 tensor
// `name` plus an F32 tensor `name.scale` (one scale per row); x is read back as q * s (error at most s / 2).
// kFp16: IEEE half precision, round to nearest even (relative error at most 2^-11; beyond 65504 refused).
enum class Store { kFp32, kFp16, kInt8 };
Store parse_store(const std::string& name);  // "fp32" | "fp16" | "int8"; Error otherwise
std::string store_name(Store s);
// Replaces the 2-D F32 tensor `name` of `t` with its compressed form (kFp32: unchanged).
void compress_tensor(TensorMap& t, const std::string& name, Store store);
// Turns every F16 tensor, and every I8 tensor with a `<name>.scale` companion, back into F32 (the companions
// are removed), so that a model's load() sees the float tensors it saved.
void decompress_tensors(TensorMap& t);
// IEEE half <-> float (round to nearest even; overflow gives infinity).
uint16_t float_to_half(float x);
float half_to_float(uint16_t h);

// ---- Magnitude pruning and sparse storage ---------------------------------------------------------------
//
// prune_tensor zeroes the round(fraction * numel) entries of smallest magnitude of one 2-D F32 tensor (per
// tensor, not global: an embedding table and a layer's weights have their own scales); ties go to the lower
// index, so the result is a function of the values alone. Returns the fraction of zeros afterwards.
double prune_tensor(TensorMap& t, const std::string& name, double fraction);
// Stores a 2-D tensor of any dtype sparsely when that is smaller: `name` becomes the 1-D list of its non-zero
// elements (row-major, same dtype), `name.mask` one bit per element (U8, row-major, least significant bit
// first) and `name.shape` its shape (I64). Returns whether it was stored so. Combines with compress_tensor
// (compress first: the zeros stay zeros in int8 and fp16).
bool sparsify_tensor(TensorMap& t, const std::string& name);
// Turns every tensor with `<name>.mask` / `<name>.shape` companions back into its dense form (zeros in the
// unset positions); run before decompress_tensors.
void densify_tensors(TensorMap& t);

}  // namespace xdrec
