// The durable event log of the server: one SQLite file in WAL mode with synchronous=FULL, so a transaction
// that returned is on disk and survives kill -9 (and a power cut, as far as the disk keeps its promises).
// Events: feedback, item additions (with the item's text and its encoded vector, so a replay needs no
// encoder), item deletions. Appends are serialised; reads see every committed event.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

struct sqlite3;

namespace xdrec::serve {

struct Event {
  int64_t seq = 0;   // assigned by the log, increasing
  std::string kind;  // "feedback", "add_item", "delete_item"
  std::string user, item, type;
  int64_t timestamp = 0;   // seconds (the event's time, as given or as received)
  std::string payload;     // add_item: JSON of the item (domain, title, description, categories)
  std::vector<float> vec;  // add_item: the item's text vector (may be empty)
};

class EventLog {
 public:
  // Opens (creating when missing) the log at `path`; Error with the path and SQLite's reason on failure.
  explicit EventLog(const std::string& path);
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Appends the events in one transaction; returns only after the commit (durable). Sets each seq.
  void append(std::vector<Event>& events);
  // Every event in order.
  void for_each(const std::function<void(const Event&)>& fn) const;
  // A user's feedback events in order (at most `limit`, the latest ones).
  std::vector<Event> feedback_of(const std::string& user, size_t limit = 1000) const;
  int64_t count() const;
  const std::string& path() const { return path_; }

 private:
  void exec(const char* sql) const;
  std::string path_;
  sqlite3* db_ = nullptr;
  mutable std::mutex mu_;
};

}  // namespace xdrec::serve
