// The text pipeline shared by the models that use text: raw encoder vectors -> centred on the mean item
// vector (text vectors share a large common direction) -> optional autoencoder code -> L2-normalised.
// Fitted with the model and saved with it, so a new item or user with only text is mapped the same way.
#pragma once

#include <cstdint>
#include <string>

#include "xdrec/autoencoder.h"
#include "xdrec/common.h"
#include "xdrec/tensor_io.h"

namespace xdrec::models {

struct TextFeatureOptions {
  bool center = true;
  bool normalize = true;
  int ae_dim = 0;  // 0: no autoencoder
  int ae_hidden = 256;
  double ae_noise = 0.1;  // denoising input dropout
  int ae_epochs = 30;
};

class TextFeatures {
 public:
  // Learns the mean of the non-zero item rows and, with ae_dim > 0, an autoencoder on the item rows plus the
  // non-zero user rows (user_text may be null).
  void fit(const Matrix& item_text, const Matrix* user_text, const TextFeatureOptions& opt, uint64_t seed,
           int threads);
  bool fitted() const { return input_dim_ > 0; }
  size_t input_dim() const { return input_dim_; }
  size_t dim() const;  // output dimension
  // raw (input_dim) -> out (dim()). A row of zeros (no text) maps to zeros.
  void transform_row(const float* raw, float* out) const;
  Matrix transform(const Matrix& raw, int threads) const;
  void save(TensorMap& tensors, const std::string& prefix) const;
  void load(const TensorMap& tensors, const std::string& prefix);

 private:
  // raw -> centred (and, with the autoencoder, unit length): the autoencoder's input.
  void prepare(const float* raw, float* out) const;
  TextFeatureOptions opt_;
  size_t input_dim_ = 0;
  std::vector<float> mean_;
  TextAutoencoder ae_;
};

}  // namespace xdrec::models
