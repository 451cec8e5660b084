#include "kv/kv_event_recorder.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "common/check.h"
#include "kv/kv_event_codec.h"

namespace kvmesh::kv {

Status KvEventRecorderOptions::Validate() const {
  if (max_events_per_batch == 0) {
    return InvalidArgumentError("max_events_per_batch must be > 0, got 0");
  }
  return Status::Ok();
}

KvEventRecorder::KvEventRecorder(KvEventRecorderOptions options)
    : options_(std::move(options)), next_seq_(options_.first_seq) {
  KVMESH_CHECK(options_.Validate().ok(), "invalid KvEventRecorderOptions");
}

void KvEventRecorder::Emit(KvEvent event) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back(std::move(event));
}

std::vector<SequencedKvEventBatch> KvEventRecorder::Flush(double ts) {
  std::vector<KvEvent> events;
  {
    std::lock_guard<std::mutex> lock(mu_);
    events.swap(pending_);
  }
  // Build and encode outside the lock, then number under it. Only one thread flushes in
  // practice; to stay correct if two do, numbering and ring insertion happen in one critical
  // section so seqs stay consecutive in the ring.
  std::vector<SequencedKvEventBatch> out;
  for (size_t begin = 0; begin < events.size(); begin += options_.max_events_per_batch) {
    const size_t end = std::min(events.size(), begin + options_.max_events_per_batch);
    SequencedKvEventBatch b;
    b.batch.ts = ts;
    b.batch.dp_rank = options_.dp_rank;
    b.batch.events.assign(std::make_move_iterator(events.begin() + static_cast<long>(begin)),
                          std::make_move_iterator(events.begin() + static_cast<long>(end)));
    b.payload = EncodeKvEventBatch(b.batch);
    out.push_back(std::move(b));
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (SequencedKvEventBatch& b : out) {
    b.seq = next_seq_++;
    if (options_.replay_capacity == 0) continue;
    if (replay_.size() == options_.replay_capacity) replay_.pop_front();
    replay_.push_back({b.seq, b.payload});
  }
  return out;
}

StatusOr<std::vector<ReplayedKvEventBatch>> KvEventRecorder::Replay(uint64_t from_seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (from_seq > next_seq_) {
    return OutOfRangeError("replay from seq " + std::to_string(from_seq) +
                           " is ahead of the next seq " + std::to_string(next_seq_) +
                           " (producer restarted?); resync from an inventory snapshot");
  }
  const uint64_t oldest = replay_.empty() ? next_seq_ : replay_.front().seq;
  if (from_seq < oldest) {
    return OutOfRangeError("replay from seq " + std::to_string(from_seq) +
                           " is older than the oldest retained seq " + std::to_string(oldest) +
                           "; resync from an inventory snapshot");
  }
  std::vector<ReplayedKvEventBatch> out(replay_.begin() + static_cast<long>(from_seq - oldest),
                                        replay_.end());
  return out;
}

uint64_t KvEventRecorder::next_seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  return next_seq_;
}

size_t KvEventRecorder::num_pending_events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.size();
}

size_t KvEventRecorder::num_replay_batches() const {
  std::lock_guard<std::mutex> lock(mu_);
  return replay_.size();
}

}  // namespace kvmesh::kv
