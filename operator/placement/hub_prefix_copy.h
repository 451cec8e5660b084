// Acting on the placement's `replicate` decisions (docs/placement.md, "Copying a hot prefix root
// into another cluster"): the hub copies the root's KV blocks from an agent of the source cluster
// into an agent of the target cluster, through the agents' prefix-copy endpoints
// (docs/kv-transfer.md, "Prefix copies"):
//   1. POST <source agent>/v1/kv/export {"hashes": chain}: the first source agent (in the order
//      of kvmesh.dev/member-agents) that holds the chain's first block pins the cached head of the
//      chain under a lease and answers with a transfer handle;
//   2. POST <target agent>/v1/kv/import {"kv_transfer_params", "hashes"}: the first target agent
//      that accepts pulls the blocks over its KV transport (agent to agent; the hub moves no KV)
//      and commits them into its prefix cache;
//   3. POST <source agent>/v1/kv/leases/release: the export's lease ends at once (best effort; a
//      pull that ran released it already, an unused lease would otherwise last its TTL).
// Errors are collected per step into PrefixCopyResult::error; nothing here throws or retries.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/http_client.h"

namespace kvmesh::placement {

struct PrefixCopyResult {
  bool ok = false;
  std::string source_agent;      // the agent that exported ("" when none did)
  std::string target_agent;      // the agent that imported ("" when none did)
  int64_t exported_blocks = 0;   // the cached head of the chain on the source agent
  int64_t imported_blocks = 0;   // blocks pulled by the target agent
  int64_t already_cached_blocks = 0;  // blocks the target agent held already
  int64_t bytes = 0;             // KV bytes pulled
  std::string error;             // why it failed: every agent's answer, "; "-joined
};

class PrefixCopier {
 public:
  // `timeout`: connect and read timeout of the export and release requests; an import may run up
  // to `import_timeout` (its pull is bounded by the target agent's --transfer.timeout).
  PrefixCopier(std::chrono::milliseconds timeout, std::chrono::milliseconds import_timeout);
  ~PrefixCopier();

  // `chain`: the root's block hashes (non-empty). `source_agents`, `target_agents`: agent base
  // URLs of the two clusters (non-empty for a copy to be tried).
  PrefixCopyResult Copy(const std::vector<uint64_t>& chain, const std::vector<std::string>& source_agents,
                        const std::vector<std::string>& target_agents);

 private:
  std::unique_ptr<http::HttpClient> http_;
  std::unique_ptr<http::HttpClient> import_http_;
};

}  // namespace kvmesh::placement
