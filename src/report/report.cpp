// The HTML report: hand-drawn inline SVG (report.h).
#include "xdrec/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "xdrec/common.h"

namespace xdrec {

namespace {

using json = nlohmann::json;

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

std::string num(double v, int prec = 4) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

const char* kColours[] = {"#2f6fdf", "#e07b39", "#3a9d5d", "#b8433e",
                          "#7d5bbf", "#8c6d3f", "#d05fa9", "#6b7b8c"};
const char* colour(size_t k) {
  return kColours[k % 8];
}

// A plot area: maps data to pixels and draws axes with a few ticks.
struct Plot {
  Plot(double a, double b, double c, double d) : x0(a), x1(b), y0(c), y1(d) {}
  double x0, x1, y0, y1;  // data ranges
  int w = 560, h = 300, ml = 60, mr = 20, mt = 20, mb = 50;
  std::string svg;
  double px(double x) const { return ml + (x - x0) / (x1 - x0 > 0 ? x1 - x0 : 1) * (w - ml - mr); }
  double py(double y) const { return h - mb - (y - y0) / (y1 - y0 > 0 ? y1 - y0 : 1) * (h - mt - mb); }
  void axes(const std::string& xl, const std::string& yl, bool x_ticks = true) {
    svg += "<line x1='" + num(ml, 1) + "' y1='" + num(h - mb, 1) + "' x2='" + num(w - mr, 1) + "' y2='" +
           num(h - mb, 1) + "' stroke='#555'/><line x1='" + num(ml, 1) + "' y1='" + num(mt, 1) + "' x2='" +
           num(ml, 1) + "' y2='" + num(h - mb, 1) + "' stroke='#555'/>";
    for (int t = 0; t <= 4; ++t) {
      const double xv = x0 + (x1 - x0) * t / 4, yv = y0 + (y1 - y0) * t / 4;
      if (x_ticks)
        svg += "<text x='" + num(px(xv), 1) + "' y='" + num(h - mb + 16, 1) +
               "' font-size='11' text-anchor='middle'>" + num(xv, 3) + "</text>";
      svg += "<text x='" + num(ml - 6, 1) + "' y='" + num(py(yv) + 4, 1) +
             "' font-size='11' text-anchor='end'>" + num(yv, 3) + "</text>";
      svg += "<line x1='" + num(ml, 1) + "' y1='" + num(py(yv), 1) + "' x2='" + num(w - mr, 1) + "' y2='" +
             num(py(yv), 1) + "' stroke='#eee'/>";
    }
    svg += "<text x='" + num((ml + w - mr) / 2.0, 1) + "' y='" + num(h - 12, 1) +
           "' font-size='12' text-anchor='middle'>" + esc(xl) + "</text>";
    svg += "<text x='14' y='" + num((mt + h - mb) / 2.0, 1) +
           "' font-size='12' text-anchor='middle' transform='rotate(-90 14 " + num((mt + h - mb) / 2.0, 1) +
           ")'>" + esc(yl) + "</text>";
  }
};

std::string figure(const std::string& name, const std::string& caption, size_t points, const Plot& p,
                   const std::string& legend = "") {
  return "<figure class='chart' data-chart='" + esc(name) + "' data-points='" + std::to_string(points) +
         "'><svg width='" + std::to_string(p.w) + "' height='" + std::to_string(p.h) +
         "' xmlns='http://www.w3.org/2000/svg'>" + p.svg + "</svg>" + legend + "<figcaption>" + caption +
         "</figcaption></figure>\n";
}

std::string legend_of(const std::vector<std::string>& names) {
  std::string s = "<div class='legend'>";
  for (size_t k = 0; k < names.size(); ++k)
    s += "<span><i style='background:" + std::string(colour(k)) + "'></i>" + esc(names[k]) + "</span>";
  return s + "</div>";
}

// Grouped bars with optional 95% intervals: groups (x) x series (colours).
std::string bar_chart(const std::string& name, const std::string& caption,
                      const std::vector<std::string>& groups, const std::vector<std::string>& series,
                      const std::vector<std::vector<double>>& value,
                      const std::vector<std::vector<double>>& ci, const std::string& ylabel) {
  double hi = 0;
  size_t points = 0;
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t s = 0; s < series.size(); ++s)
      if (std::isfinite(value[g][s])) hi = std::max(hi, value[g][s] + (ci.empty() ? 0 : ci[g][s])), ++points;
  Plot p{0, double(groups.size()), 0, hi > 0 ? hi * 1.1 : 1};
  p.w = std::max(560, int(groups.size() * series.size() * 22 + 120));
  p.axes("", ylabel, false);  // categories: named under each group
  const double gw = (p.w - p.ml - p.mr) / double(std::max<size_t>(groups.size(), 1));
  const double bw = gw * 0.8 / double(std::max<size_t>(series.size(), 1));
  for (size_t g = 0; g < groups.size(); ++g) {
    p.svg += "<text x='" + num(p.ml + gw * (g + 0.5), 1) + "' y='" + num(p.h - p.mb + 30, 1) +
             "' font-size='11' text-anchor='middle'>" + esc(groups[g]) + "</text>";
    for (size_t s = 0; s < series.size(); ++s) {
      const double v = value[g][s];
      if (!std::isfinite(v)) continue;
      const double x = p.ml + gw * g + gw * 0.1 + bw * s;
      p.svg += "<rect class='bar' x='" + num(x, 1) + "' y='" + num(p.py(v), 1) + "' width='" +
               num(bw * 0.9, 1) + "' height='" + num(p.py(0) - p.py(v), 1) + "' fill='" + colour(s) +
               "'><title>" + esc(series[s]) + ": " + num(v) + (ci.empty() ? "" : " ± " + num(ci[g][s])) +
               "</title></rect>";
      if (!ci.empty() && ci[g][s] > 0) {
        const double cx = x + bw * 0.45;
        p.svg += "<line x1='" + num(cx, 1) + "' x2='" + num(cx, 1) + "' y1='" + num(p.py(v - ci[g][s]), 1) +
                 "' y2='" + num(p.py(v + ci[g][s]), 1) + "' stroke='#222'/>";
      }
    }
  }
  return figure(name, caption, points, p, legend_of(series));
}

// Lines through points (x, y) per series, with optional point labels.
std::string line_chart(const std::string& name, const std::string& caption,
                       const std::vector<std::string>& series,
                       const std::vector<std::vector<std::pair<double, double>>>& pts,
                       const std::vector<std::vector<std::string>>& labels, const std::string& xl,
                       const std::string& yl) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  size_t points = 0;
  for (auto& s : pts)
    for (auto [x, y] : s)
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y), ++points;
  if (!points) x0 = y0 = 0, x1 = y1 = 1;
  const double padx = (x1 - x0) * 0.05 + 1e-9, pady = (y1 - y0) * 0.1 + 1e-9;
  Plot p{x0 - padx, x1 + padx, y0 - pady, y1 + pady};
  p.axes(xl, yl);
  for (size_t s = 0; s < pts.size(); ++s) {
    std::string path;
    for (size_t k = 0; k < pts[s].size(); ++k) {
      const auto [x, y] = pts[s][k];
      path += (k ? " L" : "M") + num(p.px(x), 1) + " " + num(p.py(y), 1);
      p.svg += "<circle class='point' cx='" + num(p.px(x), 1) + "' cy='" + num(p.py(y), 1) +
               "' r='3.5' fill='" + colour(s) + "'><title>" + esc(series[s]) + ": (" + num(x) + ", " +
               num(y) + ")</title></circle>";
      if (!labels.empty() && k < labels[s].size())
        p.svg += "<text x='" + num(p.px(x) + 5, 1) + "' y='" + num(p.py(y) - 5, 1) + "' font-size='10'>" +
                 esc(labels[s][k]) + "</text>";
    }
    p.svg += "<path d='" + path + "' fill='none' stroke='" + colour(s) + "' stroke-width='1.5'/>";
  }
  return figure(name, caption, points, p, legend_of(series));
}

// Predicted against true ratings as a density grid (many points: shade by log count), with the diagonal.
std::string rating_scatter(const std::string& model, const json& pairs) {
  std::vector<std::pair<double, double>> v;
  for (auto& pr : pairs) v.emplace_back(pr[0].get<double>(), pr[1].get<double>());
  double lo = INFINITY, hi = -INFINITY, se = 0, ae = 0;
  for (auto [pred, t] : v)
    lo = std::min({lo, pred, t}), hi = std::max({hi, pred, t}), se += (pred - t) * (pred - t),
    ae += std::abs(pred - t);
  const double n = double(std::max<size_t>(v.size(), 1));
  Plot p{lo, hi, lo, hi};
  p.w = 420, p.h = 380;
  p.axes("true rating", "predicted rating");
  const int bins = 40;
  std::vector<int> grid(bins * bins, 0);
  auto bin = [&](double x) { return std::clamp(int((x - lo) / (hi - lo + 1e-12) * bins), 0, bins - 1); };
  for (auto [pred, t] : v) ++grid[bin(pred) * bins + bin(t)];
  const int mx = *std::max_element(grid.begin(), grid.end());
  const double cw = (p.w - p.ml - p.mr) / double(bins), ch = (p.h - p.mt - p.mb) / double(bins);
  for (int r = 0; r < bins; ++r)
    for (int c = 0; c < bins; ++c) {
      const int k = grid[r * bins + c];
      if (!k) continue;
      const double a = 0.15 + 0.85 * std::log1p(k) / std::log1p(std::max(mx, 1));
      p.svg += "<rect class='point' x='" + num(p.ml + c * cw, 1) + "' y='" +
               num(p.h - p.mb - (r + 1) * ch, 1) + "' width='" + num(cw + 0.3, 1) + "' height='" +
               num(ch + 0.3, 1) + "' fill='#2f6fdf' fill-opacity='" + num(a, 3) + "'><title>" +
               std::to_string(k) + " ratings</title></rect>";
    }
  p.svg += "<line x1='" + num(p.px(lo), 1) + "' y1='" + num(p.py(lo), 1) + "' x2='" + num(p.px(hi), 1) +
           "' y2='" + num(p.py(hi), 1) + "' stroke='#b8433e' stroke-dasharray='4 3'/>";
  std::string out =
      figure("rating-scatter",
             esc(model) + ": predicted against true ratings (" + std::to_string(v.size()) +
                 " test ratings; shade: log count); RMSE " + num(std::sqrt(se / n)) + ", MAE " + num(ae / n),
             v.size(), p);
  // Error by true rating.
  std::map<double, std::pair<double, size_t>> by;
  for (auto [pred, t] : v)
    by[std::round(t * 2) / 2].first += std::abs(pred - t), ++by[std::round(t * 2) / 2].second;
  std::vector<std::string> groups;
  std::vector<std::vector<double>> val;
  for (auto& [t, e] : by) groups.push_back(num(t, 1)), val.push_back({e.first / double(e.second)});
  out += bar_chart("rating-error", esc(model) + ": mean absolute error by true rating", groups, {"MAE"}, val,
                   {}, "MAE");
  return out;
}

}  // namespace

std::string render_report(const std::vector<std::pair<std::string, json>>& inputs, const std::string& title) {
  std::string body, notes;
  size_t charts = 0;
  auto count = [&](const std::string& html) {
    size_t n = 0, pos = 0;
    while ((pos = html.find("class='chart'", pos)) != std::string::npos) ++n, ++pos;
    charts += n;
    return html;
  };
  for (const auto& [file, j] : inputs) {
    body += "<h2>" + esc(file) + "</h2>\n";
    if (j.contains("models") && j["models"].is_object() && !j["models"].empty() &&
        j["models"].begin()->contains("overall")) {
      // xdrec eval output.
      const json& ms = j["models"];
      const std::string task = j.value("task", "ranking");
      body += "<p>dataset " + esc(j.value("dataset", "")) + ", protocol " + esc(j.value("protocol", "")) +
              ", " + std::to_string(j.value("seeds", 1)) + " seed(s), fitted on " +
              esc(j.value("fit_on", "")) + ", scored on " + esc(j.value("scored_on", "")) + "</p>\n";
      // Table of every model.
      std::vector<std::string> cols = {"ndcg@10",     "precision@10", "recall@10",  "f1@10",         "hr@10",
                                       "coverage@10", "diversity@10", "novelty@10", "serendipity@10"};
      if (task == "rating") cols.insert(cols.begin(), {"rmse", "mae"});
      std::string t = "<table><tr><th>model</th>";
      for (auto& c : cols) t += "<th>" + esc(c) + "</th>";
      t += "<th>fit s</th><th>peak MB</th></tr>";
      for (auto& [key, m] : ms.items()) {
        t += "<tr><td title='" + esc(m.value("spec", "")) + "'>" + esc(key) + "</td>";
        for (auto& c : cols) {
          const auto& o = m["overall"];
          std::string cell = o.contains(c) ? num(o[c].get<double>()) : "";
          if (m.contains("ci95") && m["ci95"].contains(c)) cell += " ± " + num(m["ci95"][c].get<double>());
          t += "<td>" + cell + "</td>";
        }
        t += "<td>" + num(m.value("fit_seconds", 0.0), 2) + "</td><td>" +
             num(m.value("peak_rss_mb", 0.0), 0) + "</td></tr>";
      }
      body += t + "</table>\n";
      const std::string metric = task == "rating" ? "rmse" : "ndcg@10";
      // Per domain with intervals.
      std::vector<std::string> models, domains;
      for (auto& [key, m] : ms.items()) {
        models.push_back(key);
        if (m.contains("by_domain"))
          for (auto& [d, v] : m["by_domain"].items())
            if (std::find(domains.begin(), domains.end(), d) == domains.end() && v.contains(metric))
              domains.push_back(d);
      }
      if (!domains.empty()) {
        std::vector<std::vector<double>> val(domains.size(), std::vector<double>(models.size(), NAN)),
            ci(domains.size(), std::vector<double>(models.size(), 0));
        for (size_t d = 0; d < domains.size(); ++d)
          for (size_t k = 0; k < models.size(); ++k) {
            const json& m = ms[models[k]];
            if (m["by_domain"].contains(domains[d]) && m["by_domain"][domains[d]].contains(metric))
              val[d][k] = m["by_domain"][domains[d]][metric].get<double>();
            if (m.contains("ci95_by_domain") && m["ci95_by_domain"].contains(domains[d]) &&
                m["ci95_by_domain"][domains[d]].contains(metric))
              ci[d][k] = m["ci95_by_domain"][domains[d]][metric].get<double>();
          }
        body += count(bar_chart("per-domain",
                                esc(metric) + " per domain (bars: mean over seeds; lines: 95% interval)",
                                domains, models, val, ci, metric));
      }
      // Per cohort.
      std::vector<std::string> cohorts;
      for (auto& [key, m] : ms.items())
        if (m.contains("by_cohort"))
          for (auto& [c, v] : m["by_cohort"].items())
            if (std::find(cohorts.begin(), cohorts.end(), c) == cohorts.end() && v.contains(metric))
              cohorts.push_back(c);
      if (!cohorts.empty()) {
        std::vector<std::vector<double>> val(cohorts.size(), std::vector<double>(models.size(), NAN));
        for (size_t c = 0; c < cohorts.size(); ++c)
          for (size_t k = 0; k < models.size(); ++k) {
            const json& m = ms[models[k]];
            if (m.contains("by_cohort") && m["by_cohort"].contains(cohorts[c]) &&
                m["by_cohort"][cohorts[c]].contains(metric))
              val[c][k] = m["by_cohort"][cohorts[c]][metric].get<double>();
          }
        body += count(bar_chart("per-cohort", esc(metric) + " per cohort (cold/warm users, head/tail items)",
                                cohorts, models, val, {}, metric));
      }
      // Accuracy against diversity: the MMR grid where there is one, else one point per model.
      std::vector<std::string> series;
      std::vector<std::vector<std::pair<double, double>>> pts;
      std::vector<std::vector<std::string>> labels;
      for (auto& [key, m] : ms.items()) {
        if (m.contains("diversity_grid")) {
          series.push_back(key);
          pts.emplace_back();
          labels.emplace_back();
          for (auto& row : m["diversity_grid"])
            if (row["metrics"].contains("diversity@10") && row["metrics"].contains("ndcg@10")) {
              pts.back().emplace_back(row["metrics"]["diversity@10"].get<double>(),
                                      row["metrics"]["ndcg@10"].get<double>());
              labels.back().push_back("λ " + num(row["lambda"].get<double>(), 1));
            }
        }
      }
      if (series.empty())
        for (auto& [key, m] : ms.items())
          if (m["overall"].contains("diversity@10") && m["overall"].contains("ndcg@10")) {
            series.push_back(key);
            pts.push_back(
                {{m["overall"]["diversity@10"].get<double>(), m["overall"]["ndcg@10"].get<double>()}});
          }
      if (!series.empty())
        body += count(line_chart("accuracy-diversity",
                                 "NDCG@10 against intra-list diversity (MMR trade-off λ where evaluated)",
                                 series, pts, labels, "diversity@10", "ndcg@10"));
      for (auto& [key, m] : ms.items())
        if (m.contains("rating_pairs") && !m["rating_pairs"].empty())
          body += count(rating_scatter(key, m["rating_pairs"]));
      // Popularity long tail: recommended against interacted items per popularity decile.
      {
        std::vector<std::string> lt_series;
        std::vector<std::vector<std::pair<double, double>>> lt_pts;
        for (auto& [key, m] : ms.items()) {
          if (!m.contains("long_tail")) continue;
          if (lt_series.empty()) {
            lt_series.push_back("interacted (training)");
            lt_pts.emplace_back();
            const auto& v = m["long_tail"]["interacted"];
            for (size_t d = 0; d < v.size(); ++d)
              lt_pts.back().emplace_back(double(d + 1), v[d].get<double>());
          }
          lt_series.push_back(key);
          lt_pts.emplace_back();
          const auto& v = m["long_tail"]["recommended"];
          for (size_t d = 0; d < v.size(); ++d) lt_pts.back().emplace_back(double(d + 1), v[d].get<double>());
        }
        if (!lt_series.empty())
          body +=
              count(line_chart("long-tail",
                               "Popularity long tail: share of the recommended items (and of the training "
                               "interactions) in each popularity decile of the catalogue, 1 = most popular "
                               "tenth",
                               lt_series, lt_pts, {}, "popularity decile", "share"));
      }
      // Training curves: loss per epoch where the model records it.
      {
        std::vector<std::string> tc_series;
        std::vector<std::vector<std::pair<double, double>>> tc_pts;
        for (auto& [key, m] : ms.items()) {
          if (!m.contains("training_curves")) continue;
          for (auto& [name, v] : m["training_curves"].items()) {
            tc_series.push_back(key + ": " + name);
            tc_pts.emplace_back();
            for (size_t e = 0; e < v.size(); ++e)
              tc_pts.back().emplace_back(double(e + 1), v[e].get<double>());
          }
        }
        if (!tc_series.empty())
          body += count(line_chart("training-curves", "Training loss per epoch (first seed)", tc_series,
                                   tc_pts, {}, "epoch", "loss"));
      }
    } else if (j.contains("models") && j["models"].is_object() && !j["models"].empty() &&
               j["models"].begin()->contains("rmse")) {
      // bench/ratings.
      std::vector<std::string> models;
      std::vector<std::vector<double>> val(1), ci(1);
      for (auto& [key, m] : j["models"].items()) {
        models.push_back(key);
        val[0].push_back(m["rmse"]["mean"].get<double>());
        ci[0].push_back(m["rmse"].value("ci95", 0.0));
      }
      body += count(bar_chart("ratings-rmse", "RMSE over the folds (mean ± 95% interval)", {"RMSE"}, models,
                              val, ci, "RMSE"));
    } else if (j.contains("cfgan-protocol") || j.contains("augmentation")) {
      // bench/gan.
      auto mean_of = [](const json& v) { return v.is_object() ? v.value("mean", NAN) : NAN; };
      auto ci_of = [](const json& v) { return v.is_object() ? v.value("ci95", 0.0) : 0.0; };
      if (j.contains("cfgan-protocol")) {
        const std::vector<std::string> metrics{"p@5", "ndcg@5", "p@20", "ndcg@20"};
        std::vector<std::string> models;
        for (auto& [key, m] : j["cfgan-protocol"].items()) models.push_back(key);
        std::vector<std::vector<double>> val(metrics.size(), std::vector<double>(models.size(), NAN)),
            ci(metrics.size(), std::vector<double>(models.size(), 0));
        for (size_t q = 0; q < metrics.size(); ++q)
          for (size_t k = 0; k < models.size(); ++k) {
            const json& m = j["cfgan-protocol"][models[k]];
            if (m.contains(metrics[q])) val[q][k] = mean_of(m[metrics[q]]), ci[q][k] = ci_of(m[metrics[q]]);
          }
        body += count(
            bar_chart("cfgan-protocol",
                      "CFGAN's MovieLens 100k protocol (random 80/20): every model, mean ± 95% interval",
                      metrics, models, val, ci, "metric"));
      }
      if (j.contains("augmentation"))
        for (auto& [protocol, ms] : j["augmentation"].items()) {
          std::vector<std::string> models;
          std::vector<std::vector<double>> val(1), ci(1);
          for (auto& [key, m] : ms.items()) {
            if (!m.contains("ndcg@10")) continue;
            models.push_back(key);
            val[0].push_back(mean_of(m["ndcg@10"]));
            ci[0].push_back(ci_of(m["ndcg@10"]));
          }
          if (!models.empty())
            body += count(bar_chart("augmentation-" + protocol,
                                    "Augmentation, " + esc(protocol) +
                                        ": NDCG@10 of the augmented domain with and without generated "
                                        "interactions (mean ± 95% interval)",
                                    {"NDCG@10"}, models, val, ci, "NDCG@10"));
        }
    } else if (j.contains("rounds") && j["rounds"].is_array()) {
      // xdrec replay.
      std::vector<std::string> series{"no feedback", "exclusion only", "feedback"};
      std::vector<std::vector<std::pair<double, double>>> pts(3);
      for (auto& r : j["rounds"]) {
        const double x = r["round"].get<double>();
        pts[0].emplace_back(x, r["no_feedback"]["ndcg"].get<double>());
        pts[1].emplace_back(x, r["exclusion_only"]["ndcg"].get<double>());
        pts[2].emplace_back(x, r["feedback"]["ndcg"].get<double>());
      }
      body += "<p>" + esc(j.value("dataset", "")) + ", " + esc(j.value("model", "")) + "</p>";
      body += count(line_chart("replay", "NDCG of each next round: the feedback loop replayed (xdrec replay)",
                               series, pts, {}, "round", "ndcg@" + std::to_string(j.value("k", 10))));
    } else if (j.contains("exact") && j.contains("hnsw")) {
      // bench/serve.
      std::vector<std::vector<double>> val(1);
      val[0] = {j["exact"]["qps"].get<double>(), j["hnsw"]["qps"].get<double>()};
      body += count(bar_chart("serve-qps", "Requests per second of GET /v1/recommend (bench/serve)", {"QPS"},
                              {"exact", "HNSW"}, val, {}, "QPS"));
    } else {
      notes += "<li>" + esc(file) + ": not a shape this report knows</li>";
    }
  }
  check(charts > 0,
        "report: none of the inputs gives a chart (give the JSON of xdrec eval, replay or bench/ratings)");
  std::string html = "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>" + esc(title) +
                     "</title><style>body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#1d2733}"
                     "table{border-collapse:collapse;margin:8px 0}th,td{border-bottom:1px solid "
                     "#e3e6ea;padding:3px 8px;text-align:left}"
                     "figure{display:inline-block;margin:10px;vertical-align:top}figcaption{font-size:12px;"
                     "color:#55606e;max-width:560px}"
                     ".legend span{margin-right:12px;font-size:12px}.legend "
                     "i{display:inline-block;width:10px;height:10px;margin-right:4px}"
                     "</style></head><body><h1>" +
                     esc(title) + "</h1>\n" + body;
  if (!notes.empty()) html += "<h2>Not shown</h2><ul>" + notes + "</ul>";
  return html + "</body></html>\n";
}

}  // namespace xdrec
