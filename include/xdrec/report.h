// The HTML report (`xdrec report IN.json... -o report.html`): one self-contained page (inline SVG charts
// drawn here, no script or network at view time) from the JSON that `xdrec eval`, `xdrec replay` and the
// benchmarks write. Each chart is a <figure class="chart" data-chart=NAME data-points=N> so that a test can
// check that every chart has data.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace xdrec {

// Inputs as (file name, parsed JSON). Recognised shapes: eval output ({"models": {key: {"overall",
// "by_domain", "ci95_by_domain", "by_cohort", "diversity_grid", "rating_pairs", ...}}}), bench/ratings
// ({"models": {spec:
// {"rmse": {"mean", "ci95"}}}}), replay ({"rounds": [...]}) and bench/serve ({"exact", "hnsw"}); anything
// else is listed as not understood. Error when no input gives a chart.
std::string render_report(const std::vector<std::pair<std::string, nlohmann::json>>& inputs,
                          const std::string& title = "xdrec report");

}  // namespace xdrec
