// Offline replay of the feedback loop through the serving path (see serve.h).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "xdrec/pipeline.h"
#include "xdrec/recommender.h"
#include "xdrec/serve.h"

namespace xdrec::serve {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct Score {
  double ndcg = 0, hr = 0;
  size_t n = 0;
  std::vector<double> each;  // NDCG of each user-round, in order
  void add(const std::vector<std::string>& list, const std::set<std::string>& rel, size_t k) {
    double dcg = 0, idcg = 0;
    bool hit = false;
    for (size_t r = 0; r < std::min(k, list.size()); ++r)
      if (rel.count(list[r])) dcg += 1.0 / std::log2(double(r) + 2), hit = true;
    for (size_t r = 0; r < std::min(k, rel.size()); ++r) idcg += 1.0 / std::log2(double(r) + 2);
    each.push_back(idcg > 0 ? dcg / idcg : 0);
    ndcg += each.back();
    hr += hit;
    ++n;
  }
  json to_json() const { return {{"ndcg", n ? ndcg / double(n) : 0.0}, {"hr", n ? hr / double(n) : 0.0}}; }
};

std::vector<std::string> ids(const json& list) {
  std::vector<std::string> out;
  for (auto& x : list["items"]) out.push_back(x["item"].get<std::string>());
  return out;
}

// Mean and 95% interval (normal approximation) of the paired difference a - b over the same user-rounds.
json paired(const Score& a, const Score& b) {
  const size_t n = std::min(a.each.size(), b.each.size());
  double m = 0, v = 0;
  for (size_t k = 0; k < n; ++k) m += a.each[k] - b.each[k];
  m = n ? m / double(n) : 0;
  for (size_t k = 0; k < n; ++k) v += (a.each[k] - b.each[k] - m) * (a.each[k] - b.each[k] - m);
  const double se = n > 1 ? std::sqrt(v / double(n - 1) / double(n)) : 0;
  return {{"mean", m}, {"ci95", 1.96 * se}, {"n", n}};
}

}  // namespace

json replay(const Dataset& ds, const ReplayOptions& opt) {
  check(opt.first > 0 && opt.first < 1, "replay: --first must be in (0, 1)");
  check(opt.rounds >= 1 && opt.rounds <= 100, "replay: --rounds must be between 1 and 100");
  check(opt.k >= 1 && opt.k <= 100, "replay: -k must be between 1 and 100");
  std::vector<size_t> order;
  for (size_t e = 0; e < ds.interactions.size(); ++e) {
    check(ds.interactions[e].has_timestamp(),
          "replay: dataset '" + ds.name + "' has interactions without timestamps (replay splits by time)");
    order.push_back(e);
  }
  check(order.size() >= 10, "replay: too few interactions");
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return ds.interactions[a].timestamp < ds.interactions[b].timestamp;
  });
  const size_t cut = size_t(double(order.size()) * opt.first);
  // The served data: the first part only (same ids).
  Dataset first = ds;
  first.interactions.clear();
  first.fixed_split.clear();
  for (size_t k = 0; k < cut; ++k) first.interactions.push_back(ds.interactions[order[k]]);
  const fs::path tmp = fs::temp_directory_path() / ("xdrec-replay-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  Timer t;
  FitRequest req;
  req.spec = opt.model;
  req.seed = opt.seed;
  req.threads = opt.threads;
  const Sequences seqs = user_sequences(first.n_users(), first.interactions);
  req.sequences = &seqs;
  const Matrix cats = first.category_vectors();
  req.item_categories = &cats;
  Fitted f = fit_model(first, first.user_item_matrix(), req);
  const std::string model_dir = (tmp / "model").string();
  save_model(*f.model, model_dir, first.fingerprint());
  const std::string spec = f.model->spec();
  f.model.reset();
  if (!opt.quiet)
    std::fprintf(stderr, "replay: %s trained on the first %zu interactions in %.1f s\n", spec.c_str(), cut,
                 t.seconds());

  ServiceOptions so;
  so.model_dir = model_dir;
  so.text = "none";
  so.quiet = true;
  so.threads = opt.threads;
  so.db = (tmp / "live.sqlite").string();
  Service live(first, so);
  so.db = (tmp / "static.sqlite").string();
  const Service fixed(first, so);

  std::vector<uint8_t> trained(ds.n_users(), 0);
  std::vector<std::set<uint32_t>> taken(ds.n_users());  // items each user took so far
  for (auto& it : first.interactions) trained[it.user] = 1, taken[it.user].insert(it.item);
  const size_t later = order.size() - cut;
  json rounds = json::array();
  Score total_none, total_excl, total_fb, total_new;
  for (int r = 0; r < opt.rounds; ++r) {
    const size_t lo = cut + later * size_t(r) / size_t(opt.rounds),
                 hi = cut + later * size_t(r + 1) / size_t(opt.rounds);
    // The round's targets: items new to the user.
    std::map<uint32_t, std::set<std::string>> targets;
    for (size_t k = lo; k < hi; ++k) {
      const Interaction& it = ds.interactions[order[k]];
      if (!taken[it.user].count(it.item)) targets[it.user].insert(ds.items.name(it.item));
    }
    Score none, excl, fb, fresh;
    for (auto& [u, rel] : targets) {
      RecommendQuery q;
      q.user = ds.users.name(u);
      q.k = opt.k;
      if (!trained[u]) {
        // Known only through earlier rounds' feedback, if at all.
        try {
          fresh.add(ids(live.recommend(q)), rel, opt.k);
        } catch (const ServeError&) {
          fresh.add({}, rel, opt.k);
        }
        continue;
      }
      fb.add(ids(live.recommend(q)), rel, opt.k);
      RecommendQuery wide = q;
      wide.k = std::min<size_t>(1000, opt.k + taken[u].size());
      const std::vector<std::string> base = ids(fixed.recommend(wide));
      none.add(std::vector<std::string>(base.begin(), base.begin() + std::min(opt.k, base.size())), rel,
               opt.k);
      std::vector<std::string> kept;
      for (auto& i : base)
        if (!taken[u].count(*ds.items.find(i)) && kept.size() < opt.k) kept.push_back(i);
      excl.add(kept, rel, opt.k);
    }
    // Then the round's events arrive as feedback (one durable batch).
    std::vector<Feedback> events;
    for (size_t k = lo; k < hi; ++k) {
      const Interaction& it = ds.interactions[order[k]];
      events.push_back({ds.users.name(it.user), ds.items.name(it.item), "click", it.timestamp});
      taken[it.user].insert(it.item);
    }
    if (!events.empty()) live.add_feedback(events);
    json row{{"round", r + 1},
             {"events", hi - lo},
             {"users", none.n},
             {"no_feedback", none.to_json()},
             {"exclusion_only", excl.to_json()},
             {"feedback", fb.to_json()},
             {"new_users", fresh.to_json()},
             {"new_users_n", fresh.n}};
    if (!opt.quiet)
      std::fprintf(stderr,
                   "round %d: %zu users, NDCG@%zu no feedback %.4f, exclusion only %.4f, feedback %.4f; %zu "
                   "new users %.4f\n",
                   r + 1, none.n, opt.k, row["no_feedback"]["ndcg"].get<double>(),
                   row["exclusion_only"]["ndcg"].get<double>(), row["feedback"]["ndcg"].get<double>(),
                   fresh.n, row["new_users"]["ndcg"].get<double>());
    rounds.push_back(row);
    auto merge = [](Score& a, const Score& b) {
      a.ndcg += b.ndcg, a.hr += b.hr, a.n += b.n;
      a.each.insert(a.each.end(), b.each.begin(), b.each.end());
    };
    merge(total_none, none), merge(total_excl, excl), merge(total_fb, fb), merge(total_new, fresh);
  }
  fs::remove_all(tmp);
  return {{"dataset", ds.name},
          {"model", spec},
          {"k", opt.k},
          {"first", opt.first},
          {"train_interactions", cut},
          {"later_interactions", later},
          {"rounds", rounds},
          {"all_rounds",
           {{"user_rounds", total_none.n},
            {"no_feedback", total_none.to_json()},
            {"exclusion_only", total_excl.to_json()},
            {"feedback", total_fb.to_json()},
            {"new_users", total_new.to_json()},
            {"new_user_rounds", total_new.n},
            {"ndcg_feedback_minus_no_feedback", paired(total_fb, total_none)},
            {"ndcg_feedback_minus_exclusion_only", paired(total_fb, total_excl)}}},
          {"seconds", t.seconds()}};
}

}  // namespace xdrec::serve
