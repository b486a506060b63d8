// TextFeatures (see text_features.h): raw text vector -> minus the mean of the non-zero item rows ->
// scaled to unit length -> optional autoencoder code -> L2-normalised. The unit-length step before the
// autoencoder makes its input scale the same for every encoder (TF-IDF, GloVe and sentence encoders give
// vectors of very different norms). A zero raw row means "no text" and maps to zeros at every step.
#include "models/text_features.h"

#include <cmath>

namespace xdrec::models {

namespace {

bool zero_row(const float* x, size_t d) {
  for (size_t j = 0; j < d; ++j)
    if (x[j] != 0.0f) return false;
  return true;
}

// x <- x / ||x|| (left as is when x is zero).
void normalize(float* x, size_t d) {
  double s = 0;
  for (size_t j = 0; j < d; ++j) s += double(x[j]) * double(x[j]);
  if (s <= 0) return;
  const float inv = float(1.0 / std::sqrt(s));
  for (size_t j = 0; j < d; ++j) x[j] *= inv;
}

void check_finite(const Matrix& m, const std::string& what) {
  for (size_t i = 0; i < m.rows; ++i)
    for (size_t j = 0; j < m.cols; ++j)
      check(std::isfinite(m(i, j)),
            "text features: " + what + " row " + std::to_string(i) + " has a non-finite value");
}

}  // namespace

void AutoencoderParams::declare(ParamSet& params) {
  params
      .add("ae", &ae, 0, 0, 4096,
           "autoencoder code size of the text features (0: no autoencoder; below the text dimension)")
      .add("ae_hidden", &ae_hidden, 256, 0, 65536, "autoencoder hidden layer width (0: linear; at least ae)")
      .add("ae_noise", &ae_noise, 0.1, 0.0, 0.99, "autoencoder input dropout (denoising)")
      .add("ae_epochs", &ae_epochs, 30, 1, 100000, "autoencoder training epochs");
}

void AutoencoderParams::validate(const std::string& model) const {
  if (ae > 0 && ae_hidden > 0 && ae_hidden < ae)
    throw Error(model + ": ae_hidden=" + std::to_string(ae_hidden) + " is smaller than the code size ae=" +
                std::to_string(ae) + " (use ae_hidden >= ae, or 0 for a linear autoencoder)");
}

TextFeatureOptions AutoencoderParams::options(const std::string& model, size_t text_dim) const {
  if (ae > 0 && size_t(ae) >= text_dim)
    throw Error(model + ": ae=" + std::to_string(ae) + " is not below the text dimension " +
                std::to_string(text_dim) +
                " (the autoencoder code must be shorter than the text vectors; ae=0 "
                "uses the text without an autoencoder)");
  TextFeatureOptions opt;
  opt.ae_dim = ae;
  opt.ae_hidden = ae_hidden;
  opt.ae_noise = ae_noise;
  opt.ae_epochs = ae_epochs;
  return opt;
}

void TextFeatures::fit(const Matrix& item_text, const Matrix* user_text, const TextFeatureOptions& opt,
                       uint64_t seed, int threads) {
  check(item_text.cols > 0, "text features: the item text vectors have no columns");
  check(item_text.data.size() == item_text.rows * item_text.cols,
        "text features: the item text matrix is inconsistent");
  check(opt.ae_dim >= 0, "text features: ae_dim must be >= 0");
  check_finite(item_text, "item text");
  if (user_text) {
    check(user_text->rows == 0 || user_text->cols == item_text.cols,
          "text features: user text vectors have " + std::to_string(user_text->cols) +
              " dimensions but item text vectors have " + std::to_string(item_text.cols));
    check_finite(*user_text, "user text");
  }
  const size_t d = item_text.cols;
  opt_ = opt;
  input_dim_ = 0;
  mean_.assign(d, 0.0f);
  ae_ = TextAutoencoder();
  if (opt.center) {
    std::vector<double> acc(d, 0.0);
    size_t n = 0;
    for (size_t i = 0; i < item_text.rows; ++i) {
      const float* r = item_text.row(i);
      if (zero_row(r, d)) continue;
      for (size_t j = 0; j < d; ++j) acc[j] += r[j];
      ++n;
    }
    if (n > 0)
      for (size_t j = 0; j < d; ++j) mean_[j] = float(acc[j] / double(n));
  }
  input_dim_ = d;
  if (opt.ae_dim > 0) {
    // The autoencoder learns from the centred, unit-length item rows and the non-zero user profile rows.
    std::vector<const float*> src;
    for (size_t i = 0; i < item_text.rows; ++i)
      if (!zero_row(item_text.row(i), d)) src.push_back(item_text.row(i));
    if (user_text && user_text->rows > 0)
      for (size_t i = 0; i < user_text->rows; ++i)
        if (!zero_row(user_text->row(i), d)) src.push_back(user_text->row(i));
    Matrix x(src.size(), d);
    for (size_t k = 0; k < src.size(); ++k) prepare(src[k], x.row(k));
    AutoencoderOptions ao;
    ao.code_dim = opt.ae_dim;
    ao.hidden = opt.ae_hidden;
    ao.noise = opt.ae_noise;
    ao.epochs = opt.ae_epochs;
    ao.seed = seed;
    ao.threads = threads;
    try {
      ae_.fit(x, ao);
    } catch (...) {
      input_dim_ = 0;
      throw;
    }
  }
}

void TextFeatures::prepare(const float* raw, float* out) const {
  const size_t d = input_dim_;
  if (zero_row(raw, d)) {
    std::fill(out, out + d, 0.0f);
    return;
  }
  for (size_t j = 0; j < d; ++j) out[j] = raw[j] - mean_[j];
  if (opt_.ae_dim > 0) normalize(out, d);
}

size_t TextFeatures::dim() const {
  if (!fitted()) return 0;
  return opt_.ae_dim > 0 ? size_t(opt_.ae_dim) : input_dim_;
}

void TextFeatures::transform_row(const float* raw, float* out) const {
  check(fitted(), "text features: not fitted (call fit or load first)");
  const size_t d = input_dim_;
  if (zero_row(raw, d)) {
    std::fill(out, out + dim(), 0.0f);
    return;
  }
  if (opt_.ae_dim > 0) {
    std::vector<float> tmp(d);
    prepare(raw, tmp.data());
    ae_.encode_row(tmp.data(), out);
  } else {
    prepare(raw, out);
  }
  if (opt_.normalize) normalize(out, dim());
}

Matrix TextFeatures::transform(const Matrix& raw, int threads) const {
  check(fitted(), "text features: not fitted (call fit or load first)");
  check(raw.cols == input_dim_, "text features: vectors have " + std::to_string(raw.cols) +
                                    " dimensions but the model was fitted on " + std::to_string(input_dim_) +
                                    " (vectors from a different encoder?)");
  Matrix out(raw.rows, dim());
  parallel_for(raw.rows, resolve_threads(threads), 256, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) transform_row(raw.row(i), out.row(i));
  });
  return out;
}

void TextFeatures::save(TensorMap& tensors, const std::string& prefix) const {
  check(fitted(), "text features: cannot save unfitted text features");
  tensors[prefix + "mean"] = Tensor::from_f32({int64_t(input_dim_)}, mean_.data());
  const uint32_t config[4] = {uint32_t(opt_.center), uint32_t(opt_.normalize), uint32_t(opt_.ae_dim),
                              uint32_t(input_dim_)};
  tensors[prefix + "config"] = Tensor::from_u32({4}, config);
  if (opt_.ae_dim > 0) ae_.save(tensors, prefix + "ae.");
}

void TextFeatures::load(const TensorMap& tensors, const std::string& prefix) {
  const std::vector<uint32_t> config = get_tensor(tensors, prefix + "config").to_u32(prefix + "config");
  check(config.size() == 4, "text features load: " + prefix + "config has " + std::to_string(config.size()) +
                                " entries, expected 4");
  check(config[0] <= 1 && config[1] <= 1 && config[3] > 0,
        "text features load: " + prefix + "config is invalid");
  std::vector<float> mean = get_tensor(tensors, prefix + "mean").to_f32(prefix + "mean");
  check(mean.size() == config[3], "text features load: " + prefix + "mean has " +
                                      std::to_string(mean.size()) + " entries but the input dimension is " +
                                      std::to_string(config[3]));
  TextFeatureOptions opt = opt_;
  opt.center = config[0] != 0;
  opt.normalize = config[1] != 0;
  opt.ae_dim = int(config[2]);
  TextAutoencoder ae;
  if (opt.ae_dim > 0) {
    ae.load(tensors, prefix + "ae.");
    check(ae.input_dim() == config[3] && ae.code_dim() == size_t(opt.ae_dim),
          "text features load: the autoencoder maps " + std::to_string(ae.input_dim()) + " -> " +
              std::to_string(ae.code_dim()) + " but the configuration says " + std::to_string(config[3]) +
              " -> " + std::to_string(opt.ae_dim));
  }
  opt_ = opt;
  mean_ = std::move(mean);
  ae_ = std::move(ae);
  input_dim_ = config[3];
}

}  // namespace xdrec::models
