// The text pipeline shared by the models that use text: raw encoder vectors -> centred on the mean item
// vector (text vectors share a large common direction) -> optional autoencoder code -> L2-normalised.
// Fitted with the model and saved with it, so a new item or user with only text is mapped the same way.
#pragma once

#include <cstdint>
#include <string>

#include "xdrec/autoencoder.h"
#include "xdrec/common.h"
#include "xdrec/params.h"
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

// The autoencoder options of every text model (hybrid, twotower, textbridge), declared once so that they have
// the same names, defaults, ranges and checks everywhere:
//   ae         code dimension of the text features; 0: no autoencoder. Must be below the text dimension.
//   ae_hidden  hidden layer width on each side (0: linear); at least ae.
//   ae_noise   input dropout while training (denoising).
//   ae_epochs  training epochs.
struct AutoencoderParams {
  int ae = 0, ae_hidden = 256, ae_epochs = 30;
  double ae_noise = 0.1;

  // Declares the four keys in `params` (bound to this object's fields).
  void declare(ParamSet& params);
  // After ParamSet::apply: Error naming `model` when ae_hidden is below ae.
  void validate(const std::string& model) const;
  // Options for TextFeatures::fit on text vectors of `text_dim` dimensions. Error naming `model`, the value
  // and the dimension when ae is not below text_dim (the code would not compress anything).
  TextFeatureOptions options(const std::string& model, size_t text_dim) const;
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
