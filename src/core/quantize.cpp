// Compressed storage of float matrices in model files (tensor_io.h): int8 with one symmetric scale per row,
// and IEEE half precision. Only the file shrinks: loading turns both back into floats, so scoring and serving
// run unchanged on the dequantised values.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "xdrec/tensor_io.h"

namespace xdrec {

Store parse_store(const std::string& name) {
  if (name == "fp32") return Store::kFp32;
  if (name == "fp16") return Store::kFp16;
  if (name == "int8") return Store::kInt8;
  throw Error("unknown storage '" + name + "' (known: fp32, fp16, int8)");
}

std::string store_name(Store s) {
  switch (s) {
    case Store::kFp32:
      return "fp32";
    case Store::kFp16:
      return "fp16";
    case Store::kInt8:
      return "int8";
  }
  return "?";
}

uint16_t float_to_half(float x) {
  const uint32_t b = std::bit_cast<uint32_t>(x);
  const uint16_t sign = uint16_t((b >> 16) & 0x8000u);
  const uint32_t abs = b & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) return uint16_t(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u));  // inf, NaN
  if (abs >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // rounds beyond 65504: infinity
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): the value in units of 2^-24, rounded to nearest even.
    if (abs < 0x33000000u) return sign;  // below half of the smallest subnormal
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const int shift = 126 - int(abs >> 23);  // 14..24 for exponents -14..-25 + 1
    const uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    return uint16_t(sign | (q + (rem > half || (rem == half && (q & 1u)))));
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even (a carry into the
  // exponent is the correct result).
  const uint32_t r = abs - 0x38000000u;
  const uint32_t q = r >> 13, rem = r & 0x1FFFu;
  return uint16_t(sign | (q + (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))));
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
  const float v = std::ldexp(float(mant), -24);  // subnormal (exact)
  return sign ? -v : v;
}

void compress_tensor(TensorMap& t, const std::string& name, Store store) {
  if (store == Store::kFp32) return;
  auto it = t.find(name);
  check(it != t.end(), "compress: the model has no tensor '" + name + "'");
  const Tensor& src = it->second;
  check(src.dtype == DType::F32 && src.shape.size() == 2,
        "compress: tensor '" + name + "' is not a 2-D float tensor");
  const std::vector<float> x = src.to_f32(name);
  const size_t rows = size_t(src.shape[0]), cols = size_t(src.shape[1]);
  for (float v : x) check(std::isfinite(v), "compress: tensor '" + name + "' holds a non-finite value");
  Tensor out;
  out.shape = src.shape;
  if (store == Store::kFp16) {
    out.dtype = DType::F16;
    out.bytes.resize(x.size() * 2);
    for (size_t i = 0; i < x.size(); ++i) {
      const uint16_t h = float_to_half(x[i]);
      check((h & 0x7C00u) != 0x7C00u,
            "compress: tensor '" + name + "' holds a value beyond the half-precision range (65504)");
      std::memcpy(out.bytes.data() + 2 * i, &h, 2);
    }
    it->second = std::move(out);
    return;
  }
  // int8: per row, s = max|x| / 127 and q = round(x / s) in [-127, 127]; an all-zero row has scale 0.
  out.dtype = DType::I8;
  out.bytes.resize(x.size());
  std::vector<float> scale(rows, 0.0f);
  for (size_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * cols;
    float m = 0.0f;
    for (size_t c = 0; c < cols; ++c) m = std::max(m, std::fabs(row[c]));
    scale[r] = m / 127.0f;
    const float inv = m > 0.0f ? 127.0f / m : 0.0f;
    for (size_t c = 0; c < cols; ++c) {
      const float q = std::clamp(std::nearbyint(row[c] * inv), -127.0f, 127.0f);
      out.bytes[r * cols + c] = uint8_t(int8_t(q));
    }
  }
  it->second = std::move(out);
  t[name + ".scale"] = Tensor::from_f32({int64_t(rows)}, scale.data());
}

void decompress_tensors(TensorMap& t) {
  std::vector<std::string> companions;
  for (auto& [name, tensor] : t) {
    if (tensor.dtype == DType::F16) {
      std::vector<float> x(tensor.numel());
      for (size_t i = 0; i < x.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, tensor.bytes.data() + 2 * i, 2);
        x[i] = half_to_float(h);
      }
      tensor = Tensor::from_f32(tensor.shape, x.data());
    } else if (tensor.dtype == DType::I8) {
      auto s = t.find(name + ".scale");
      if (s == t.end()) continue;  // an int8 tensor of the model's own, not a compressed matrix
      check(tensor.shape.size() == 2, "tensor '" + name + "': an int8 matrix must have 2 dimensions");
      const std::vector<float> scale = s->second.to_f32(name + ".scale");
      const size_t rows = size_t(tensor.shape[0]), cols = size_t(tensor.shape[1]);
      check(scale.size() == rows, "tensor '" + name + ".scale' has " + std::to_string(scale.size()) +
                                      " entries for " + std::to_string(rows) + " rows");
      std::vector<float> x(rows * cols);
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = 0; c < cols; ++c)
          x[r * cols + c] = float(int8_t(tensor.bytes[r * cols + c])) * scale[r];
      tensor = Tensor::from_f32(tensor.shape, x.data());
      companions.push_back(name + ".scale");
    }
  }
  for (const std::string& c : companions) t.erase(c);
}

}  // namespace xdrec
