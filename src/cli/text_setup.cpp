#include "cli/text_setup.h"

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cli/progress.h"

namespace fs = std::filesystem;

namespace xdrec::cli {

std::unique_ptr<TextEncoder> make_encoder(const std::string& spec, bool quiet) {
  check(!spec.empty(), "--encoder: empty encoder spec");
  if (spec != "auto") return create_encoder(spec);
  try {
    return create_encoder("use-lite");
  } catch (const Error& e) {
    if (!quiet) std::fprintf(stderr, "encoder auto: use-lite unavailable (%s); using tfidf\n", e.what());
    return create_encoder("tfidf");
  }
}

std::vector<std::string> item_texts(const Dataset& ds, const std::string& tmpl, const Split* split) {
  if (!split || ds.tags.empty()) return dataset_item_texts(ds, tmpl, /*include_tags=*/true);
  const std::vector<ItemText> texts = item_text_with_tags(ds, *split);
  std::vector<std::string> out(ds.n_items());
  for (uint32_t i = 0; i < ds.n_items(); ++i)
    out[i] = render_item_text(tmpl, i < texts.size() ? texts[i] : ItemText{},
                              ds.domains.name(ds.item_domain[i]), ds.items.name(i));
  return out;
}

void TextSide::attach(FitContext& ctx) const {
  ctx.item_text = &items;
  ctx.user_text = has_user_text ? &users : nullptr;
  ctx.text_encoder = encoder_spec;
}

TextSide compute_text_side(const Dataset& ds, const Split* split, TextEncoder& enc, const TextArgs& a,
                           const Common& c) {
  check_item_template(a.item_template);
  const int threads = resolve_threads(c.threads);
  const std::vector<std::string> items = item_texts(ds, a.item_template, split);
  const std::vector<std::string> users = dataset_user_texts(ds);
  TextSide t;
  t.item_template = a.item_template;
  t.split_tags = split != nullptr && !ds.tags.empty();
  size_t with_text = 0;
  for (auto& s : items) with_text += !s.empty();
  check(with_text > 0, "--encoder: no item of " + ds.name + " has text for the template '" + a.item_template +
                           "' (no title, description or categories)");
  EmbedOptions opt;
  opt.item_template = a.item_template;
  opt.cache_dir = a.cache_dir;
  opt.batch = 1024;
  opt.threads = threads;
  opt.progress = progress_bar(!c.quiet);
  if (enc.needs_fit()) {
    Timer ft;
    enc.fit(items, threads);  // on every item text, as embed_dataset does (same fingerprint, same cache)
    t.stats.fit_seconds = ft.seconds();
  }
  // Only the non-empty texts are encoded; the others stay rows of zeros.
  std::vector<std::string> texts;
  std::vector<std::pair<bool, uint32_t>> where;  // (is user, index)
  for (uint32_t i = 0; i < items.size(); ++i)
    if (!items[i].empty()) texts.push_back(items[i]), where.emplace_back(false, i);
  for (uint32_t u = 0; u < users.size(); ++u)
    if (!users[u].empty()) texts.push_back(users[u]), where.emplace_back(true, u);
  const double fit_s = t.stats.fit_seconds;
  const Matrix m = encode_with_cache(enc, texts, opt, &t.stats);
  t.stats.fit_seconds = fit_s;
  const size_t d = m.cols;
  t.items.resize(ds.n_items(), d);
  t.users.resize(ds.n_users(), d);
  for (size_t r = 0; r < where.size(); ++r) {
    Matrix& dst = where[r].first ? t.users : t.items;
    std::memcpy(dst.row(where[r].second), m.row(r), d * sizeof(float));
    t.has_user_text |= where[r].first;
  }
  t.encoder_spec = enc.spec();
  t.fingerprint = enc.fingerprint();
  if (!c.quiet)
    std::fprintf(stderr,
                 "text: %zu of %u items and %zu of %u users have text; %s (dim %zu), %zu from the cache, "
                 "%zu encoded in %.2f s\n",
                 with_text, ds.n_items(), where.size() - with_text, ds.n_users(), t.encoder_spec.c_str(), d,
                 t.stats.cached, t.stats.encoded, t.stats.encode_seconds);
  return t;
}

void write_text_config(const std::string& model_dir, const TextSide& t, const std::string& split_dir) {
  nlohmann::json j = {{"format", "xdrec-text-config"},
                      {"version", 1},
                      {"encoder", t.encoder_spec},
                      {"fingerprint", t.fingerprint},
                      {"dim", t.items.cols},
                      {"item_template", t.item_template},
                      {"split_tags", t.split_tags},
                      {"split", t.split_tags ? fs::absolute(split_dir).lexically_normal().string() : ""}};
  write_file_atomic((fs::path(model_dir) / kTextConfigFile).string(), j.dump(2) + "\n");
}

void remove_text_config(const std::string& model_dir) {
  std::error_code ec;
  fs::remove(fs::path(model_dir) / kTextConfigFile, ec);
}

std::optional<TextConfig> read_text_config(const std::string& model_dir) {
  const std::string path = (fs::path(model_dir) / kTextConfigFile).string();
  if (!fs::exists(path)) return std::nullopt;
  TextConfig cfg;
  try {
    const nlohmann::json j = nlohmann::json::parse(read_file(path));
    check(j.is_object() && j.value("format", "") == "xdrec-text-config", path + ": not an xdrec text config");
    cfg.encoder = j.at("encoder").get<std::string>();
    cfg.fingerprint = j.at("fingerprint").get<std::string>();
    cfg.dim = j.at("dim").get<size_t>();
    cfg.item_template = j.at("item_template").get<std::string>();
    cfg.split_tags = j.value("split_tags", false);
    cfg.split_dir = j.value("split", "");
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": malformed text config: " + e.what());
  }
  return cfg;
}

std::unique_ptr<TextEncoder> encoder_for_model(const Recommender& model, const std::string& model_dir,
                                               const Dataset& ds, const std::string& split_dir,
                                               const Common& c) {
  check(model.uses_text(), "model '" + model.name() +
                               "' does not use text, so it cannot serve a profile text or a new item's text "
                               "(train a text model with --encoder; `xdrec models` lists them)");
  const std::string spec = model.text_encoder();
  check(!spec.empty(), "model '" + model.spec() + "' in '" + model_dir +
                           "' was trained without text vectors; retrain it with --encoder SPEC");
  const std::optional<TextConfig> cfg = read_text_config(model_dir);
  check(!cfg || cfg->encoder == spec, "'" + model_dir + "/" + kTextConfigFile + "' names the encoder '" +
                                          (cfg ? cfg->encoder : "") + "' but the model was fitted with '" +
                                          spec + "'");
  std::unique_ptr<TextEncoder> enc;
  try {
    enc = create_encoder(spec);
  } catch (const Error& e) {
    throw Error("cannot re-create the text encoder of model '" + model.name() + "' (" + spec +
                "): " + e.what());
  }
  if (enc->needs_fit()) {
    check(cfg.has_value(), "model directory '" + model_dir + "' has no " + kTextConfigFile +
                               ", which encoder " + enc->name() +
                               " needs to be refitted; retrain the model with `xdrec train`");
    std::optional<Split> split;
    if (cfg->split_tags && !ds.tags.empty())
      split = read_split(ds, split_dir.empty() ? cfg->split_dir : split_dir);
    const std::vector<std::string> texts = item_texts(ds, cfg->item_template, split ? &*split : nullptr);
    enc->fit(texts, resolve_threads(c.threads));
  }
  if (cfg)
    check(enc->fingerprint() == cfg->fingerprint,
          "the text encoder " + spec + " re-created for model '" + model.name() +
              "' differs from the one it was "
              "trained with (fingerprint " +
              enc->fingerprint() + ", recorded " + cfg->fingerprint +
              "): use the dataset (and split) the model was trained on");
  return enc;
}

std::vector<float> encode_one(const TextEncoder& enc, const std::string& text, int threads) {
  const std::string one[1] = {text};
  const Matrix m = enc.encode(one, resolve_threads(threads));
  check(m.rows == 1, enc.name() + ": encode gave " + std::to_string(m.rows) + " rows for one text");
  return std::vector<float>(m.data.begin(), m.data.end());
}

}  // namespace xdrec::cli
