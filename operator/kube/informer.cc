#include "operator/kube/informer.h"

#include <algorithm>

#include "common/log.h"

namespace kvmesh::kube {
namespace {
constexpr char kComponent[] = "informer";

std::string ResourceVersionOf(const nlohmann::json& obj) {
  if (!obj.is_object() || !obj.contains("metadata") || !obj["metadata"].is_object()) return "";
  return obj["metadata"].value("resourceVersion", "");
}
}  // namespace

Informer::Informer(KubeClient* client, InformerOptions options)
    : client_(client), options_(std::move(options)) {}

Informer::~Informer() { Stop(); }

void Informer::AddHandlers(InformerHandlers handlers) { handlers_.push_back(std::move(handlers)); }

void Informer::AddIndex(const std::string& name, IndexFunc fn) {
  std::lock_guard<std::mutex> lock(mu_);
  Index& idx = indexes_[name];
  idx.fn = std::move(fn);
  idx.keys.clear();
  for (const auto& [key, obj] : cache_) {
    for (const std::string& v : idx.fn(obj)) idx.keys[v].insert(key);
  }
}

void Informer::ReindexLocked(const std::string& key, const nlohmann::json* old_obj,
                             const nlohmann::json* new_obj) {
  for (auto& [name, idx] : indexes_) {
    std::vector<std::string> before = old_obj != nullptr ? idx.fn(*old_obj) : std::vector<std::string>{};
    std::vector<std::string> after = new_obj != nullptr ? idx.fn(*new_obj) : std::vector<std::string>{};
    if (before == after) continue;
    for (const std::string& v : before) {
      auto it = idx.keys.find(v);
      if (it == idx.keys.end()) continue;
      it->second.erase(key);
      if (it->second.empty()) idx.keys.erase(it);
    }
    for (const std::string& v : after) idx.keys[v].insert(key);
  }
}

std::vector<nlohmann::json> Informer::ByIndex(const std::string& name, const std::string& value) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<nlohmann::json> out;
  auto idx = indexes_.find(name);
  if (idx == indexes_.end()) return out;
  auto keys = idx->second.keys.find(value);
  if (keys == idx->second.keys.end()) return out;
  out.reserve(keys->second.size());
  for (const std::string& k : keys->second) {
    auto it = cache_.find(k);
    if (it != cache_.end()) out.push_back(it->second);
  }
  return out;
}

Status Informer::Start() {
  if (thread_.joinable()) return FailedPreconditionError("informer already started");
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void Informer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Informer::WaitForSync(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [this] { return synced_.load() || stop_.load(); });
  return synced_.load();
}

std::string Informer::KeyOf(const nlohmann::json& obj) {
  const auto meta = obj.value("metadata", nlohmann::json::object());
  std::string ns = meta.value("namespace", "");
  std::string name = meta.value("name", "");
  return ns.empty() ? name : ns + "/" + name;
}

std::optional<nlohmann::json> Informer::Get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cache_.find(key);
  if (it == cache_.end()) return std::nullopt;
  return it->second;
}

std::vector<nlohmann::json> Informer::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<nlohmann::json> out;
  out.reserve(cache_.size());
  for (const auto& [k, v] : cache_) out.push_back(v);
  return out;
}

std::vector<std::string> Informer::ListKeys() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [k, v] : cache_) out.push_back(k);
  return out;
}

std::string Informer::last_resource_version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_rv_;
}

void Informer::SleepFor(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_.load(); });
}

void Informer::Replace(const std::vector<nlohmann::json>& items) {
  struct Change {
    enum Kind { kAdd, kUpdate, kDelete } kind;
    nlohmann::json old_obj;
    nlohmann::json new_obj;
  };
  std::vector<Change> changes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<std::string, nlohmann::json> fresh;
    for (const auto& item : items) fresh[KeyOf(item)] = item;
    for (auto& [key, old_obj] : cache_) {
      if (fresh.count(key) == 0) changes.push_back({Change::kDelete, old_obj, {}});
    }
    for (auto& [key, obj] : fresh) {
      auto it = cache_.find(key);
      if (it == cache_.end()) {
        changes.push_back({Change::kAdd, {}, obj});
      } else if (ResourceVersionOf(it->second) != ResourceVersionOf(obj)) {
        changes.push_back({Change::kUpdate, it->second, obj});
      }
    }
    cache_ = std::move(fresh);
    for (auto& [name, idx] : indexes_) {
      idx.keys.clear();
      for (const auto& [key, obj] : cache_) {
        for (const std::string& v : idx.fn(obj)) idx.keys[v].insert(key);
      }
    }
  }
  for (const auto& c : changes) {
    for (const auto& h : handlers_) {
      switch (c.kind) {
        case Change::kAdd: if (h.on_add) h.on_add(c.new_obj); break;
        case Change::kUpdate: if (h.on_update) h.on_update(c.old_obj, c.new_obj); break;
        case Change::kDelete: if (h.on_delete) h.on_delete(c.old_obj); break;
      }
    }
  }
}

void Informer::Apply(const WatchEvent& event) {
  const std::string rv = ResourceVersionOf(event.object);
  if (event.type == "BOOKMARK") {
    std::lock_guard<std::mutex> lock(mu_);
    if (!rv.empty()) last_rv_ = rv;
    return;
  }
  const std::string key = KeyOf(event.object);
  std::optional<nlohmann::json> old_obj;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!rv.empty()) last_rv_ = rv;
    auto it = cache_.find(key);
    if (it != cache_.end()) old_obj = it->second;
    if (event.type == "DELETED") {
      cache_.erase(key);
      ReindexLocked(key, old_obj ? &*old_obj : nullptr, nullptr);
    } else {
      const nlohmann::json& stored = cache_[key] = event.object;
      ReindexLocked(key, old_obj ? &*old_obj : nullptr, &stored);
    }
  }
  for (const auto& h : handlers_) {
    if (event.type == "DELETED") {
      if (h.on_delete) h.on_delete(old_obj ? *old_obj : event.object);
    } else if (old_obj) {
      if (h.on_update && ResourceVersionOf(*old_obj) != rv) h.on_update(*old_obj, event.object);
    } else if (h.on_add) {
      h.on_add(event.object);
    }
  }
}

void Informer::Run() {
  const std::string what = options_.resource.Path(options_.ns);
  bool need_list = true;
  bool first_list = true;
  auto backoff = options_.min_backoff;
  auto fail = [&](const Status& s, const char* step) {
    KVMESH_LOG_WARN(kComponent, "retrying after error", {"resource", what}, {"step", step},
                    {"error", s.ToString()},
                    {"backoff_ms", static_cast<long long>(backoff.count())});
    SleepFor(backoff);
    backoff = std::min(backoff * 2, options_.max_backoff);
  };
  while (!stop_.load()) {
    if (need_list) {
      ListOptions lo;
      lo.label_selector = options_.label_selector;
      auto list = client_->List(options_.resource, options_.ns, lo);
      if (stop_.load()) break;
      if (!list.ok()) {
        fail(list.status(), "list");
        continue;
      }
      if (!first_list) relists_.fetch_add(1);
      first_list = false;
      Replace(list->items);
      {
        std::lock_guard<std::mutex> lock(mu_);
        last_rv_ = list->resource_version;
        synced_ = true;
      }
      cv_.notify_all();
      need_list = false;
      backoff = options_.min_backoff;
    }
    WatchOptions wo;
    wo.resource_version = last_resource_version();
    wo.label_selector = options_.label_selector;
    wo.allow_bookmarks = true;
    wo.timeout_seconds = options_.watch_timeout_seconds;
    bool gone = false;
    Status in_stream_error;
    uint64_t events = 0;
    Status s = client_->Watch(
        options_.resource, options_.ns, wo,
        [&](const WatchEvent& e) {
          if (e.type == "ERROR") {
            int code = e.object.is_object() ? e.object.value("code", 0) : 0;
            if (code == 410) {
              gone = true;
            } else {
              in_stream_error = UnavailableError("watch " + what + ": ERROR event: " + e.object.dump());
            }
            return false;
          }
          ++events;
          Apply(e);
          return true;
        },
        &stop_);
    if (stop_.load()) break;
    if (gone || IsGone(s)) {
      // The version we watched from is too old: never watch from it again.
      KVMESH_LOG_INFO(kComponent, "watch expired (410), relisting", {"resource", what},
                      {"resource_version", wo.resource_version});
      need_list = true;
      watch_restarts_.fetch_add(1);
      continue;
    }
    watch_restarts_.fetch_add(1);
    if (!s.ok()) {
      fail(s, "watch");
      continue;
    }
    if (!in_stream_error.ok()) {
      fail(in_stream_error, "watch");
      continue;
    }
    if (events > 0) {
      backoff = options_.min_backoff;
    } else {
      // The stream ended without an event: do not spin on a server that closes at once.
      SleepFor(std::min(backoff, std::chrono::milliseconds(1000)));
    }
  }
}

}  // namespace kvmesh::kube
