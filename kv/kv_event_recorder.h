// KvEventRecorder: the per-worker KvEventSink that turns events from the block pool and tiers into
// sequenced wire batches and keeps recent batches for replay.
//
// Threading: Emit() is called on the engine thread, Flush()/Replay() on the publisher thread; all
// members are guarded by one mutex, so any thread may call any method.
//
// Invariants:
//  - Sequence numbers start at options.first_seq (default 0, like vLLM's publisher) and increase
//    by exactly one per batch returned by Flush(); a batch is never renumbered or reordered.
//  - A batch holds at most options.max_events_per_batch events (so it always passes the default
//    DecodeLimits of a consumer); Flush() splits a larger backlog into consecutive batches.
//  - The replay ring holds the last options.replay_capacity batches, already encoded. Replay(s)
//    returns every retained batch with seq >= s, or kOutOfRange when s is older than the oldest
//    retained batch (the consumer must resync from an inventory snapshot) or ahead of the next
//    seq (the producer restarted; same remedy).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "kv/kv_event.h"

namespace kvmesh::kv {

struct KvEventRecorderOptions {
  uint64_t first_seq = 0;
  size_t max_events_per_batch = 4096;
  size_t replay_capacity = 10000;  // batches; 0 disables replay
  std::optional<int64_t> dp_rank;  // copied into every batch
  Status Validate() const;
};

struct SequencedKvEventBatch {
  uint64_t seq = 0;
  KvEventBatch batch;
  std::string payload;  // EncodeKvEventBatch(batch), the third ZMQ frame
};

struct ReplayedKvEventBatch {
  uint64_t seq = 0;
  std::string payload;
  friend bool operator==(const ReplayedKvEventBatch&, const ReplayedKvEventBatch&) = default;
};

class KvEventRecorder final : public KvEventSink {
 public:
  // Precondition: options.Validate().ok() (checked fatally).
  explicit KvEventRecorder(KvEventRecorderOptions options = {});

  // Buffers one event for the next Flush().
  void Emit(KvEvent event) override;

  // Moves all buffered events into batches stamped `ts` (seconds since the epoch), numbers them,
  // encodes them and records them for replay. Returns no batches when nothing was emitted.
  std::vector<SequencedKvEventBatch> Flush(double ts);

  // Retained batches with seq >= from_seq, oldest first (empty when from_seq == next_seq()).
  // kOutOfRange when from_seq < oldest retained seq, or from_seq > next_seq().
  StatusOr<std::vector<ReplayedKvEventBatch>> Replay(uint64_t from_seq) const;

  uint64_t next_seq() const;
  size_t num_pending_events() const;
  size_t num_replay_batches() const;

 private:
  const KvEventRecorderOptions options_;
  mutable std::mutex mu_;
  std::vector<KvEvent> pending_;             // guarded by mu_
  uint64_t next_seq_;                        // guarded by mu_
  std::deque<ReplayedKvEventBatch> replay_;  // guarded by mu_; consecutive seqs, oldest first
};

}  // namespace kvmesh::kv
