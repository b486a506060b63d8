#include "serve/event_log.h"

#include <sqlite3.h>

#include <cstring>

#include "xdrec/common.h"

namespace xdrec::serve {

namespace {

struct Stmt {
  sqlite3_stmt* s = nullptr;
  Stmt(sqlite3* db, const char* sql, const std::string& path) {
    if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK)
      throw Error(path + ": " + sqlite3_errmsg(db));
  }
  ~Stmt() { sqlite3_finalize(s); }
};

std::string col_text(sqlite3_stmt* s, int i) {
  const unsigned char* t = sqlite3_column_text(s, i);
  return t ? std::string(reinterpret_cast<const char*>(t), size_t(sqlite3_column_bytes(s, i)))
           : std::string();
}

Event read_row(sqlite3_stmt* s) {
  Event e;
  e.seq = sqlite3_column_int64(s, 0);
  e.kind = col_text(s, 1);
  e.user = col_text(s, 2);
  e.item = col_text(s, 3);
  e.type = col_text(s, 4);
  e.timestamp = sqlite3_column_int64(s, 5);
  e.payload = col_text(s, 6);
  const int nb = sqlite3_column_bytes(s, 7);
  if (nb > 0) {
    e.vec.resize(size_t(nb) / sizeof(float));
    std::memcpy(e.vec.data(), sqlite3_column_blob(s, 7), e.vec.size() * sizeof(float));
  }
  return e;
}

constexpr const char* kColumns = "seq, kind, user, item, type, ts, payload, vec";

}  // namespace

EventLog::EventLog(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error("event log " + path + ": " + why);
  }
  sqlite3_busy_timeout(db_, 5000);
  try {
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec(
        "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
        "user TEXT, item TEXT, type TEXT, ts INTEGER, payload TEXT, vec BLOB)");
    exec("CREATE INDEX IF NOT EXISTS events_user ON events(user, seq)");
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

EventLog::~EventLog() {
  if (db_) sqlite3_close(db_);
}

void EventLog::exec(const char* sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string why = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw Error("event log " + path_ + ": " + why);
  }
}

void EventLog::append(std::vector<Event>& events) {
  if (events.empty()) return;
  std::lock_guard lock(mu_);
  exec("BEGIN IMMEDIATE");
  try {
    Stmt st(db_, "INSERT INTO events (kind, user, item, type, ts, payload, vec) VALUES (?, ?, ?, ?, ?, ?, ?)",
            path_);
    for (auto& e : events) {
      sqlite3_reset(st.s);
      sqlite3_bind_text(st.s, 1, e.kind.c_str(), int(e.kind.size()), SQLITE_TRANSIENT);
      sqlite3_bind_text(st.s, 2, e.user.c_str(), int(e.user.size()), SQLITE_TRANSIENT);
      sqlite3_bind_text(st.s, 3, e.item.c_str(), int(e.item.size()), SQLITE_TRANSIENT);
      sqlite3_bind_text(st.s, 4, e.type.c_str(), int(e.type.size()), SQLITE_TRANSIENT);
      sqlite3_bind_int64(st.s, 5, e.timestamp);
      sqlite3_bind_text(st.s, 6, e.payload.c_str(), int(e.payload.size()), SQLITE_TRANSIENT);
      if (e.vec.empty())
        sqlite3_bind_null(st.s, 7);
      else
        sqlite3_bind_blob(st.s, 7, e.vec.data(), int(e.vec.size() * sizeof(float)), SQLITE_TRANSIENT);
      if (sqlite3_step(st.s) != SQLITE_DONE) throw Error("event log " + path_ + ": " + sqlite3_errmsg(db_));
      e.seq = sqlite3_last_insert_rowid(db_);
    }
    exec("COMMIT");
  } catch (...) {
    char* err = nullptr;
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, &err);
    sqlite3_free(err);
    throw;
  }
}

void EventLog::for_each(const std::function<void(const Event&)>& fn) const {
  std::lock_guard lock(mu_);
  Stmt st(db_, (std::string("SELECT ") + kColumns + " FROM events ORDER BY seq").c_str(), path_);
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) fn(read_row(st.s));
  if (rc != SQLITE_DONE) throw Error("event log " + path_ + ": " + sqlite3_errmsg(db_));
}

std::vector<Event> EventLog::feedback_of(const std::string& user, size_t limit) const {
  std::lock_guard lock(mu_);
  Stmt st(db_,
          (std::string("SELECT ") + kColumns +
           " FROM (SELECT * FROM events WHERE user = ? AND kind = 'feedback' ORDER BY seq DESC LIMIT ?) "
           "ORDER BY seq")
              .c_str(),
          path_);
  sqlite3_bind_text(st.s, 1, user.c_str(), int(user.size()), SQLITE_TRANSIENT);
  sqlite3_bind_int64(st.s, 2, int64_t(limit));
  std::vector<Event> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) out.push_back(read_row(st.s));
  if (rc != SQLITE_DONE) throw Error("event log " + path_ + ": " + sqlite3_errmsg(db_));
  return out;
}

int64_t EventLog::count() const {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT COUNT(*) FROM events", path_);
  return sqlite3_step(st.s) == SQLITE_ROW ? sqlite3_column_int64(st.s, 0) : 0;
}

}  // namespace xdrec::serve
