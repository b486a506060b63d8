// FactorModel (see factor_model.h): scoring, fold-in plumbing and factor tensors shared by the factor models.
#include "models/factor_model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace xdrec::models {

void FactorModel::score(std::span<const uint32_t> users, Matrix& out, int threads) const {
  check(factors_fitted(), name() + " score: the model is not fitted (call fit or load first)");
  for (uint32_t u : users)
    check(u < users_.rows, name() + " score: user index " + std::to_string(u) +
                               " is out of range (model has " + std::to_string(users_.rows) + " users)");
  mf::gemm_scores(users_, users, items_, item_bias_.empty() ? nullptr : item_bias_.data(), out,
                  resolve_threads(threads));
}

bool FactorModel::item_vectors(Matrix& items, std::vector<float>& bias) const {
  if (!factors_fitted()) return false;
  items.resize(items_.rows, items_.f);
  for (size_t i = 0; i < items_.rows; ++i) std::copy(items_.row(i), items_.row(i) + items_.f, items.row(i));
  bias = item_bias_;
  return true;
}

bool FactorModel::user_vectors(std::span<const uint32_t> users, Matrix& out) const {
  if (!factors_fitted()) return false;
  out.resize(users.size(), users_.f);
  for (size_t r = 0; r < users.size(); ++r) {
    check(users[r] < users_.rows,
          name() + " user_vectors: user index " + std::to_string(users[r]) + " is out of range");
    std::copy(users_.row(users[r]), users_.row(users[r]) + users_.f, out.row(r));
  }
  return true;
}

model_util::History FactorModel::fold_in_history(uint32_t user, std::span<const uint32_t> items,
                                                 std::span<const float> weights) const {
  check(factors_fitted(), name() + " fold_in: the model is not fitted (call fit or load first)");
  check(user <= users_.rows, name() + " fold_in: user index " + std::to_string(user) +
                                 " is beyond the next new user (" + std::to_string(users_.rows) + ")");
  return model_util::make_history(items, weights, items_.rows, false, name());
}

void FactorModel::commit_user(uint32_t user, const float* row) {
  if (user == users_.rows) users_.append_row();
  std::copy(row, row + users_.ld, users_.row(user));
}

uint32_t FactorModel::fold_in(uint32_t user, std::span<const uint32_t> items,
                              std::span<const float> weights) {
  const model_util::History hist = fold_in_history(user, items, weights);
  mf::AlignedFloats x(users_.ld, 0.0f);
  solve_user(hist, x.data());
  commit_user(user, x.data());
  return user;
}

void FactorModel::save_factors(TensorMap& tensors, const std::string& user_key, const std::string& item_key,
                               const std::string& bias_key) const {
  tensors[user_key] = Tensor::from_matrix(users_.to_matrix());
  tensors[item_key] = Tensor::from_matrix(items_.to_matrix());
  if (!bias_key.empty())
    tensors[bias_key] = Tensor::from_f32({int64_t(item_bias_.size())}, item_bias_.data());
}

FactorModel::FactorTensors FactorModel::read_factors(const TensorMap& tensors, const std::string& user_key,
                                                     const std::string& item_key, size_t cols,
                                                     const std::string& spec_note,
                                                     const std::string& bias_key) const {
  FactorTensors t;
  t.users = get_tensor(tensors, user_key).to_matrix(user_key);
  t.items = get_tensor(tensors, item_key).to_matrix(item_key);
  check(t.users.cols == cols && t.items.cols == cols,
        name() + " load: factor matrices have " + std::to_string(t.users.cols) + " and " +
            std::to_string(t.items.cols) + " columns but the spec says " + spec_note + " (" +
            std::to_string(cols) + " columns)");
  for (const Matrix* m : {&t.users, &t.items})
    for (float v : m->data)
      check(std::isfinite(v), name() + " load: a factor matrix holds a non-finite value");
  if (!bias_key.empty()) {
    t.bias = get_tensor(tensors, bias_key).to_f32(bias_key);
    check(t.bias.size() == t.items.rows, name() + " load: " + bias_key + " has " +
                                             std::to_string(t.bias.size()) + " entries for " +
                                             std::to_string(t.items.rows) + " items");
  }
  return t;
}

void FactorModel::set_factors(FactorTensors&& t) {
  users_.from_matrix(t.users);
  items_.from_matrix(t.items);
  item_bias_ = std::move(t.bias);
}

void FactorModel::check_resume(const Csr& m, std::span<const uint32_t> touched) const {
  check(factors_fitted(), name() + " resume: the model is not fitted (call fit or load first)");
  model_util::check_interactions(m, name() + " resume");
  check(m.n_rows >= users_.rows && m.n_cols >= items_.rows,
        name() + " resume: the data has " + std::to_string(m.n_rows) + " users and " +
            std::to_string(m.n_cols) + " items, fewer than the model's " + std::to_string(users_.rows) +
            " and " + std::to_string(items_.rows));
  check_touched(touched, m.n_rows, name() + " resume");
}

void FactorModel::check_touched(std::span<const uint32_t> touched, uint32_t n_users, const std::string& who) {
  for (size_t k = 0; k < touched.size(); ++k) {
    check(touched[k] < n_users, who + ": touched user " + std::to_string(touched[k]) + " is out of range");
    check(k == 0 || touched[k - 1] < touched[k], who + ": the touched users are not sorted");
  }
}

void FactorModel::grow_rows(mf::Factors& x, size_t rows, uint64_t seed, uint64_t stream_base, float scale) {
  const size_t old = x.rows;
  while (x.rows < rows) x.append_row();
  for (size_t i = old; i < rows; ++i) {
    Rng rng(seed, stream_base + i);
    float* r = x.row(i);
    for (size_t k = 0; k < x.f; ++k) r[k] = scale * rng.normal();
  }
}

std::vector<uint32_t> FactorModel::resume_users(std::span<const uint32_t> touched, uint32_t old_users,
                                                uint32_t n_users) {
  std::vector<uint32_t> users(touched.begin(), touched.end());
  for (uint32_t u = old_users; u < n_users; ++u) users.push_back(u);
  std::sort(users.begin(), users.end());
  users.erase(std::unique(users.begin(), users.end()), users.end());
  return users;
}

std::vector<uint64_t> FactorModel::resume_entries(const Csr& m, std::span<const uint32_t> users,
                                                  uint64_t seed, uint64_t stream) {
  std::vector<uint8_t> mark(m.n_rows, 0);
  for (uint32_t u : users) mark[u] = 1;
  std::vector<uint64_t> fresh, old;
  for (uint32_t u = 0; u < m.n_rows; ++u)
    for (uint64_t p = m.indptr[u]; p < m.indptr[u + 1]; ++p)
      if (m.values[p] > 0.0f) (mark[u] ? fresh : old).push_back(p);
  const size_t n_replay = std::min(old.size(), size_t(std::ceil(kResumeReplay * double(fresh.size()))));
  Rng rng(seed, stream);
  for (size_t k = 0; k < n_replay; ++k) std::swap(old[k], old[k + rng.below(old.size() - k)]);
  fresh.insert(fresh.end(), old.begin(), old.begin() + ptrdiff_t(n_replay));
  std::sort(fresh.begin(), fresh.end());
  return fresh;
}

Matrix load_factor_tensor(const TensorMap& tensors, const std::string& key, size_t rows, size_t cols,
                          const std::string& who) {
  Matrix m = get_tensor(tensors, key).to_matrix(key);
  check((rows == SIZE_MAX || m.rows == rows) && m.cols == cols,
        who + "tensor '" + key + "' is " + std::to_string(m.rows) + " x " + std::to_string(m.cols) +
            ", expected " + (rows == SIZE_MAX ? std::string("n") : std::to_string(rows)) + " x " +
            std::to_string(cols));
  return m;
}

}  // namespace xdrec::models
