#include "engine/weight_cast.h"

#include <unordered_map>

namespace gan {

struct WeightCastScope::Cache {
  struct Entry {
    std::weak_ptr<Storage> storage;
    Shape shape;
    Tensor b16;
  };
  std::unordered_map<const void*, Entry> entries;  // by the float32 weight's data pointer
  int64_t made = 0, reused = 0;
};

namespace {
thread_local WeightCastScope::Cache* t_cache = nullptr;
}  // namespace

WeightCastScope::WeightCastScope() : cache_(std::make_unique<Cache>()), prev_(t_cache) {
  t_cache = cache_.get();
}

WeightCastScope::~WeightCastScope() { t_cache = prev_; }

Tensor bf16_weight(const Tensor& w) {
  if (w.dtype() == DType::BF16) return w;
  if (!t_cache || !w.defined()) return w.to(DType::BF16);
  auto it = t_cache->entries.find(w.raw());
  if (it != t_cache->entries.end() && it->second.storage.lock() == w.storage() &&
      it->second.shape == w.shape()) {
    ++t_cache->reused;
    return it->second.b16;
  }
  // Roundings of weights that no longer exist (a spectral norm's output of an earlier forward)
  // are dropped, so that the cache holds no more than the live weights' roundings.
  std::erase_if(t_cache->entries, [](const auto& kv) { return kv.second.storage.expired(); });
  Tensor b16 = w.to(DType::BF16);
  t_cache->entries[w.raw()] = {w.storage(), w.shape(), b16};
  ++t_cache->made;
  return b16;
}

void invalidate_weight_casts() {
  if (t_cache) t_cache->entries.clear();
}

void invalidate_weight_casts(const std::vector<Tensor>& changed) {
  if (!t_cache) return;
  std::erase_if(t_cache->entries, [&](const auto& kv) {
    const std::shared_ptr<Storage> s = kv.second.storage.lock();
    if (!s) return true;
    for (const Tensor& t : changed)
      if (t.storage() == s) return true;
    return false;
  });
}

std::pair<int64_t, int64_t> weight_cast_counts() {
  return t_cache ? std::pair<int64_t, int64_t>{t_cache->made, t_cache->reused}
                 : std::pair<int64_t, int64_t>{0, 0};
}

}  // namespace gan
