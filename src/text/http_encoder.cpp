// http: a client for any OpenAI-compatible embeddings endpoint (OpenAI, vLLM, llama.cpp server, Ollama's
// /v1/embeddings, text-embeddings-inference, ...).
//
//   http:http://127.0.0.1:8080/v1/embeddings,model=all-minilm,batch=64,timeout_ms=30000,retries=3
//
// The first argument is the full endpoint URL (http:// or https://; also accepted as url=...). Each batch
// of `batch` texts is one POST of {"model": MODEL, "input": [texts...]} ("model" omitted when empty); the
// response's data[i].embedding arrays are put back in input order by their "index" fields (by position
// when no element has one). With threads > 1, up to that many batches are in flight at once; the result
// does not depend on it.
// Failures: connection errors, timeouts, HTTP 429 and 5xx are retried up to `retries` times, waiting
// backoff_ms, then twice that, and so on (at most 30 s; a Retry-After header on 429/503 is honoured up to
// 60 s). Other HTTP statuses fail at once with the status and the start of the body; a response that is not
// JSON, has no data array, has the wrong number of embeddings, duplicate or out-of-range indices,
// non-numeric values or dimensions that differ (within a response, from earlier responses, or from dim=)
// fails with a message saying so.
// The dimension is learned from the first response unless dim= gives it (dim() is 0 until then). With
// api_key_env=NAME, the key in that environment variable is sent as "Authorization: Bearer KEY".
// Texts are sent as they are, empty ones included (some servers reject empty input).
// The fingerprint covers the URL and the model name: the same model behind the same URL is assumed to give
// the same vectors.

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "data/text.h"
#include "xdrec/encoder.h"

namespace xdrec {

namespace {

void curl_init_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw Error("http: libcurl initialisation failed");
  });
}

size_t write_body(char* ptr, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(ptr, size * n);
  return size * n;
}

// The start of a response body for an error message, on one line.
std::string snippet(const std::string& body) {
  std::string s = body.substr(0, 300);
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  if (s.empty()) return "(empty body)";
  return "'" + s + (body.size() > 300 ? "...'" : "'");
}

// CURL easy handles reused across the batches of one encode() call (connections are kept alive).
class HandlePool {
 public:
  ~HandlePool() {
    for (CURL* h : free_) curl_easy_cleanup(h);
  }
  CURL* take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        CURL* h = free_.back();
        free_.pop_back();
        return h;
      }
    }
    CURL* h = curl_easy_init();
    check(h != nullptr, "http: curl_easy_init failed");
    return h;
  }
  void give(CURL* h) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(h);
  }

 private:
  std::mutex mu_;
  std::vector<CURL*> free_;
};

class HttpEncoder final : public TextEncoder {
 public:
  explicit HttpEncoder(const Spec& spec) : params_("http") {
    params_.add("model", &model_, "", {}, "model name sent with every request")
        .add("batch", &batch_, 64, 1, 1 << 20, "texts per request")
        .add("timeout_ms", &timeout_ms_, 30000, 1, 3600 * 1000,
             "time limit of one request (connect included)")
        .add("retries", &retries_, 3, 0, 100, "retries after a connection error, a timeout, HTTP 429 or 5xx")
        .add("backoff_ms", &backoff_ms_, 500, 0, 600 * 1000,
             "wait before the first retry (doubled each time)")
        .add("api_key_env", &api_key_env_, "", {},
             "environment variable holding an API key (sent as Authorization: Bearer)")
        .add("dim", &dim_param_, 0, 0, 1 << 20, "expected dimension (0: learned from the first response)");
    auto values = spec.values;
    auto it = values.find("");
    auto jt = values.find("url");
    check(!(it != values.end() && jt != values.end()),
          "http: the URL is given twice (first argument and url=)");
    if (it != values.end()) url_ = it->second, values.erase(it);
    if (jt != values.end()) url_ = jt->second, values.erase(jt);
    check(!url_.empty(),
          "http: missing endpoint URL, e.g. http:http://127.0.0.1:8080/v1/embeddings,model=NAME");
    check(url_.rfind("http://", 0) == 0 || url_.rfind("https://", 0) == 0,
          "http: the URL must start with http:// or https://, got '" + url_ + "'");
    params_.apply(values);
    if (!api_key_env_.empty()) api_key();  // fail early when the variable is missing
    learned_dim_ = size_t(dim_param_);
  }

  std::string name() const override { return "http"; }
  std::string spec() const override { return "http:" + url_ + "," + params_.current(); }
  size_t dim() const override { return learned_dim_.load(); }
  std::string fingerprint() const override {
    const std::string s = "http\n" + url_ + "\n" + model_;
    return hex64(data::hash_bytes(s.data(), s.size(), 0x68747470ULL));
  }

  Matrix encode(std::span<const std::string> texts, int threads) const override {
    curl_init_once();
    const size_t n = texts.size(), bs = size_t(batch_);
    const size_t n_batches = (n + bs - 1) / bs;
    std::vector<Matrix> parts(n_batches);
    HandlePool pool;
    parallel_for(n_batches, threads, 1, [&](size_t lo, size_t hi) {
      for (size_t b = lo; b < hi; ++b) {
        const size_t first = b * bs;
        CURL* h = pool.take();
        try {
          parts[b] = request(h, texts.subspan(first, std::min(bs, n - first)), first);
        } catch (...) {
          pool.give(h);
          throw;
        }
        pool.give(h);
      }
    });
    Matrix out(n, dim());
    for (size_t b = 0; b < n_batches; ++b) {
      check(parts[b].cols == out.cols, "http: " + url_ + ": inconsistent dimensions across responses (" +
                                           std::to_string(parts[b].cols) + " vs " + std::to_string(out.cols) +
                                           ")");
      std::copy(parts[b].data.begin(), parts[b].data.end(), out.row(b * bs));
    }
    return out;
  }

 private:
  std::string api_key() const {
    const char* k = std::getenv(api_key_env_.c_str());
    check(k && *k, "http: api_key_env=" + api_key_env_ + " but the environment variable " + api_key_env_ +
                       " is not set or empty");
    return k;
  }

  std::string request_body(std::span<const std::string> texts, size_t first) const {
    nlohmann::json input = nlohmann::json::array();
    for (size_t i = 0; i < texts.size(); ++i) {
      const size_t bad = data::find_invalid_utf8(texts[i]);
      check(bad == std::string::npos, "http: text " + std::to_string(first + i) +
                                          " is not valid UTF-8 (byte " + std::to_string(bad) + ")");
      input.push_back(texts[i]);
    }
    nlohmann::json body = {{"input", std::move(input)}};
    if (!model_.empty()) body["model"] = model_;
    return body.dump();
  }

  // POSTs one batch with retries; returns its rows in input order.
  Matrix request(CURL* h, std::span<const std::string> texts, size_t first) const {
    const std::string body = request_body(texts, first);
    struct curl_slist* headers = nullptr;
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Accept: application/json");
    std::string auth;
    if (!api_key_env_.empty()) {
      auth = "Authorization: Bearer " + api_key();
      headers = curl_slist_append(headers, auth.c_str());
    }
    std::unique_ptr<curl_slist, void (*)(curl_slist*)> guard(headers, curl_slist_free_all);

    std::string response, last_error;
    const std::string what = "http: POST " + url_ + " (texts " + std::to_string(first) + ".." +
                             std::to_string(first + texts.size() - 1) + ")";
    for (int attempt = 0;; ++attempt) {
      response.clear();
      curl_easy_reset(h);
      curl_easy_setopt(h, CURLOPT_URL, url_.c_str());
      curl_easy_setopt(h, CURLOPT_POST, 1L);
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.size()));
      curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
      curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_body);
      curl_easy_setopt(h, CURLOPT_WRITEDATA, &response);
      curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, long(timeout_ms_));
      curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, long(timeout_ms_));
      curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
      curl_easy_setopt(h, CURLOPT_USERAGENT, "xdrec");
      char errbuf[CURL_ERROR_SIZE] = {0};
      curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);

      const CURLcode rc = curl_easy_perform(h);
      bool retryable = false;
      long wait_s = 0;
      if (rc != CURLE_OK) {
        last_error = std::string(curl_easy_strerror(rc)) + (errbuf[0] ? std::string(": ") + errbuf : "");
        retryable = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
                    rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR ||
                    rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE;
        if (!retryable) throw Error(what + " failed: " + last_error);
      } else {
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300) return parse(response, texts.size(), what);
        last_error = "HTTP " + std::to_string(status) + ": " + snippet(response);
        retryable = status == 429 || status >= 500;
        if (!retryable) throw Error(what + " failed with " + last_error);
        curl_off_t ra = 0;
        if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
          wait_s = long(std::min<curl_off_t>(ra, 60));
      }
      if (attempt >= retries_)
        throw Error(what + " failed after " + std::to_string(attempt + 1) + " attempt" +
                    (attempt ? "s" : "") + ": " + last_error);
      const double backoff = std::min(30000.0, double(backoff_ms_) * std::pow(2.0, attempt));
      const double wait_ms = std::max(backoff, 1000.0 * double(wait_s));
      std::this_thread::sleep_for(std::chrono::milliseconds(int64_t(wait_ms)));
    }
  }

  Matrix parse(const std::string& response, size_t n, const std::string& what) const {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(response);
    } catch (const nlohmann::json::exception& e) {
      throw Error(what + ": the response is not valid JSON (" + e.what() + "): " + snippet(response));
    }
    if (!j.is_object() || !j.contains("data") || !j["data"].is_array()) {
      if (j.is_object() && j.contains("error"))
        throw Error(what + ": the server returned an error: " + snippet(j["error"].dump()));
      throw Error(what + ": the response has no 'data' array: " + snippet(response));
    }
    const auto& data = j["data"];
    check(data.size() == n, what + ": the response has " + std::to_string(data.size()) + " embeddings for " +
                                std::to_string(n) + " inputs");
    size_t with_index = 0;
    for (const auto& e : data)
      if (e.is_object() && e.contains("index")) ++with_index;
    check(with_index == 0 || with_index == n, what + ": only " + std::to_string(with_index) + " of " +
                                                  std::to_string(n) + " embeddings have an index");
    std::vector<const nlohmann::json*> rows(n, nullptr);
    size_t d = 0;
    for (size_t p = 0; p < n; ++p) {
      const auto& e = data[p];
      const std::string item = what + ": data[" + std::to_string(p) + "]";
      check(e.is_object() && e.contains("embedding") && e["embedding"].is_array(),
            item + " has no 'embedding' array: " + snippet(e.dump()));
      size_t idx = p;
      if (with_index) {
        check(e["index"].is_number_integer() && e["index"].get<int64_t>() >= 0 &&
                  size_t(e["index"].get<int64_t>()) < n,
              item + " has index " + e["index"].dump() + ", expected 0.." + std::to_string(n - 1));
        idx = size_t(e["index"].get<int64_t>());
        check(rows[idx] == nullptr, item + " repeats index " + std::to_string(idx));
      }
      rows[idx] = &e["embedding"];
      const size_t di = e["embedding"].size();
      if (p == 0) d = di;
      check(di == d, what + ": inconsistent dimensions in one response (data[0] has " + std::to_string(d) +
                         ", data[" + std::to_string(p) + "] has " + std::to_string(di) + ")");
    }
    check(d > 0, what + ": the embeddings are empty arrays");
    {
      std::lock_guard<std::mutex> lock(dim_mu_);
      const size_t known = learned_dim_.load();
      if (known == 0) {
        learned_dim_ = d;
      } else {
        check(known == d,
              what + ": the server returned " + std::to_string(d) + "-dimensional embeddings, expected " +
                  std::to_string(known) +
                  (dim_param_ > 0 ? " (dim=" + std::to_string(dim_param_) + ")" : " (earlier responses)"));
      }
    }
    Matrix out(n, d);
    for (size_t i = 0; i < n; ++i) {
      const auto& arr = *rows[i];
      for (size_t k = 0; k < d; ++k) {
        check(arr[k].is_number(), what + ": embedding " + std::to_string(i) + " has a non-numeric value " +
                                      snippet(arr[k].dump()));
        const double v = arr[k].get<double>();
        check(std::isfinite(v), what + ": embedding " + std::to_string(i) + " has a non-finite value");
        out(i, k) = float(v);
      }
    }
    return out;
  }

  ParamSet params_;
  std::string url_, model_, api_key_env_;
  int batch_ = 64, timeout_ms_ = 30000, retries_ = 3, backoff_ms_ = 500, dim_param_ = 0;
  mutable std::atomic<size_t> learned_dim_{0};
  mutable std::mutex dim_mu_;
};

}  // namespace

XDREC_REGISTER_ENCODER(http, "http",
                       "any OpenAI-compatible /v1/embeddings endpoint: http:URL,model=NAME (batching, "
                       "timeouts, retries with back-off, api_key_env=VAR)",
                       HttpEncoder);

}  // namespace xdrec
