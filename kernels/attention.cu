// CUDA paged attention over the block-major KV cache (fp32 throughout).
//
// Decode (PagedAttentionDecode): grid (kv head x group chunk, seq, split). One CTA of 128 threads
// handles one sequence, one KV head and up to kMaxGroup query heads of that KV head's GQA group,
// so every K/V vector is read from memory once for the whole group. The threads form subgroups of
// TPT lanes (TPT = 32, or the largest power of two <= head_dim / 4 for small heads); a subgroup
// owns one token at a time and its lanes load that token's head with coalesced float4 loads
// (scalar loads when head_dim % 4 != 0). The context is processed in chunks of kChunk tokens with
// an online softmax: scores of the chunk go to shared memory, each warp updates the running
// max/sum of some heads, then every thread rescales its register accumulators and adds p * V.
// Split-K: when there are fewer (seq, kv head) pairs than the GPU has room for, the context is
// cut into `splits` ranges handled by different CTAs; each writes (acc, max, sum) to a scratch
// buffer and a second kernel merges them (flash-decoding).
//
// Prefill (PagedAttentionPrefill): grid (tile slot, seq, q head), 128 threads; a CTA walks the
// sequence's tiles of kPrefillRows query rows (persistent loop, the host does not know q_len).
// For each chunk of 32 tokens K and V are staged in shared memory; each warp owns 4 query rows,
// lane t scores token t, the warp updates the row's online softmax, and lanes accumulate
// head_dim / 32 output dims each. Causal limit of row i: position context_len - q_len + i.
//
// Limits: head_dim <= 256 (larger records an InvalidArgument for cuda::LastError()).
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <string>

#include "kernels/attention.h"
#include "kernels/cuda_util.cuh"

namespace kvmesh::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroup = 8;    // query heads per decode CTA
constexpr int kMaxHeadDim = 256;
constexpr int kChunk = 64;      // tokens per online-softmax step (decode)
constexpr int kTokUnroll = 4;   // tokens whose loads a subgroup issues together

template <int kVec>
__device__ __forceinline__ void LoadVec(float (&r)[kVec], const float* p) {
  if constexpr (kVec == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    r[0] = t.x;
    r[1] = t.y;
    r[2] = t.z;
    r[3] = t.w;
  } else {
    r[0] = *p;
  }
}

__device__ __forceinline__ const float* TokenPtr(const float* cache, int64_t block_stride,
                                                 const int32_t* table, int token, int block_size,
                                                 int num_kv_heads, int kv_head, int head_dim) {
  const int64_t block = table[token / block_size];
  const int64_t off = token % block_size;
  return cache + block * block_stride + (off * num_kv_heads + kv_head) * head_dim;
}

// Decode. kVec: floats per load (4 = float4 path, needs head_dim % 4 == 0 and aligned cache).
// tpt: lanes per token (power of two <= 32). When splits > 1 results go to part_* instead of out.
template <int kVec>
__global__ void __launch_bounds__(kThreads)
    DecodeKernel(float* out, float* part_acc, float* part_ml, const float* q, int64_t q_stride,
                 const float* k_cache, const float* v_cache, int64_t block_stride,
                 const int32_t* block_tables, int max_blocks_per_seq, const int32_t* context_lens,
                 int num_q_heads, int num_kv_heads, int head_dim, int block_size, float scale,
                 int group_chunks, int tokens_per_split, int tpt) {
  constexpr int kMaxPerLane = 8 / kVec;  // vectors per lane: ceil(head_dim / kVec / tpt)
  __shared__ float s_q[kMaxGroup][kMaxHeadDim];
  __shared__ float s_out[kMaxGroup][kMaxHeadDim];
  __shared__ float s_scores[kMaxGroup][kChunk];
  __shared__ float s_m[kMaxGroup], s_l[kMaxGroup], s_alpha[kMaxGroup];

  const int kv_head = blockIdx.x / group_chunks;
  const int gc = blockIdx.x % group_chunks;
  const int seq = blockIdx.y;
  const int split = blockIdx.z;
  const int splits = gridDim.z;
  const int group = num_q_heads / num_kv_heads;
  const int g0 = gc * kMaxGroup;
  const int gn = min(kMaxGroup, group - g0);
  const int head0 = kv_head * group + g0;
  const int hd = head_dim;
  const int vecs = hd / kVec;
  const int lane_in_sg = threadIdx.x % tpt;
  const int sg = threadIdx.x / tpt;
  const int num_sg = kThreads / tpt;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  const int ctx = context_lens[seq];
  const int start = split * tokens_per_split;
  const int end = min(ctx, start + tokens_per_split);
  const int32_t* table = block_tables + static_cast<int64_t>(seq) * max_blocks_per_seq;

  for (int i = threadIdx.x; i < kMaxGroup * hd; i += kThreads) {
    const int g = i / hd;
    const int d = i % hd;
    s_q[g][d] = g < gn ? q[seq * q_stride + static_cast<int64_t>(head0 + g) * hd + d] * scale
                       : 0.0f;
    s_out[g][d] = 0.0f;
  }
  if (threadIdx.x < kMaxGroup) {
    s_m[threadIdx.x] = -INFINITY;
    s_l[threadIdx.x] = 0.0f;
  }
  float acc[kMaxGroup][kMaxPerLane][kVec];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g)
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i)
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc[g][i][e] = 0.0f;
  __syncthreads();

  for (int c0 = start; c0 < end; c0 += kChunk) {
    const int n = min(kChunk, end - c0);
    // 1. scores of the chunk, kTokUnroll tokens per subgroup per iteration. The loop bound is
    // the same for every lane of a warp (the subgroup reduction shuffles over the full warp).
    for (int base = 0; base < n; base += num_sg * kTokUnroll) {
      const int tt0 = base + sg;
      float kr[kTokUnroll][kMaxPerLane][kVec];
#pragma unroll
      for (int u = 0; u < kTokUnroll; ++u) {
        const int tt = tt0 + u * num_sg;
        if (tt < n) {
          const float* kp = TokenPtr(k_cache, block_stride, table, c0 + tt, block_size,
                                     num_kv_heads, kv_head, hd);
#pragma unroll
          for (int i = 0; i < kMaxPerLane; ++i) {
            const int v = lane_in_sg + i * tpt;
            if (v < vecs) {
              LoadVec<kVec>(kr[u][i], kp + v * kVec);
            } else {
#pragma unroll
              for (int e = 0; e < kVec; ++e) kr[u][i][e] = 0.0f;
            }
          }
        } else {
#pragma unroll
          for (int i = 0; i < kMaxPerLane; ++i)
#pragma unroll
            for (int e = 0; e < kVec; ++e) kr[u][i][e] = 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kTokUnroll; ++u) {
        const int tt = tt0 + u * num_sg;
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
          if (g >= gn) break;
          float dot = 0.0f;
#pragma unroll
          for (int i = 0; i < kMaxPerLane; ++i) {
            const int v = lane_in_sg + i * tpt;
            if (v < vecs) {
#pragma unroll
              for (int e = 0; e < kVec; ++e) dot += kr[u][i][e] * s_q[g][v * kVec + e];
            }
          }
          for (int off = tpt / 2; off > 0; off >>= 1) {
            dot += __shfl_xor_sync(0xffffffffu, dot, off);
          }
          if (lane_in_sg == 0 && tt < n) s_scores[g][tt] = dot;
        }
      }
    }
    __syncthreads();
    // 2. online softmax update, one warp per head.
    for (int g = warp; g < gn; g += kWarps) {
      float mx = -INFINITY;
      for (int tt = lane; tt < n; tt += 32) mx = fmaxf(mx, s_scores[g][tt]);
      mx = internal::WarpReduceMax(mx);
      const float m_old = s_m[g];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      for (int tt = lane; tt < n; tt += 32) {
        const float p = expf(s_scores[g][tt] - m_new);
        s_scores[g][tt] = p;
        sum += p;
      }
      sum = internal::WarpReduceSum(sum);
      if (lane == 0) {
        const float alpha = expf(m_old - m_new);  // 0 on the first chunk (m_old = -inf)
        s_alpha[g] = alpha;
        s_l[g] = s_l[g] * alpha + sum;
        s_m[g] = m_new;
      }
    }
    __syncthreads();
    // 3. rescale and accumulate p * V.
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= gn) break;
      const float alpha = s_alpha[g];
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i)
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[g][i][e] *= alpha;
    }
    for (int tt0 = sg; tt0 < n; tt0 += num_sg * kTokUnroll) {
      float vr[kTokUnroll][kMaxPerLane][kVec];
#pragma unroll
      for (int u = 0; u < kTokUnroll; ++u) {
        const int tt = tt0 + u * num_sg;
        if (tt < n) {
          const float* vp = TokenPtr(v_cache, block_stride, table, c0 + tt, block_size,
                                     num_kv_heads, kv_head, hd);
#pragma unroll
          for (int i = 0; i < kMaxPerLane; ++i) {
            const int v = lane_in_sg + i * tpt;
            if (v < vecs) {
              LoadVec<kVec>(vr[u][i], vp + v * kVec);
            } else {
#pragma unroll
              for (int e = 0; e < kVec; ++e) vr[u][i][e] = 0.0f;
            }
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kTokUnroll; ++u) {
        const int tt = tt0 + u * num_sg;
        if (tt >= n) break;
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
          if (g >= gn) break;
          const float p = s_scores[g][tt];
#pragma unroll
          for (int i = 0; i < kMaxPerLane; ++i)
#pragma unroll
            for (int e = 0; e < kVec; ++e) acc[g][i][e] += p * vr[u][i][e];
        }
      }
    }
    __syncthreads();  // s_scores is rewritten by the next chunk
  }

  // Merge the subgroups' partial outputs.
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= gn) break;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int v = lane_in_sg + i * tpt;
      if (v < vecs) {
#pragma unroll
        for (int e = 0; e < kVec; ++e) atomicAdd(&s_out[g][v * kVec + e], acc[g][i][e]);
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < gn * hd; i += kThreads) {
    const int g = i / hd;
    const int d = i % hd;
    const int64_t vec = static_cast<int64_t>(seq) * num_q_heads + head0 + g;
    if (splits == 1) {
      const float l = s_l[g];
      out[vec * hd + d] = l > 0.0f ? s_out[g][d] / l : 0.0f;
    } else {
      part_acc[(vec * splits + split) * hd + d] = s_out[g][d];
      if (d == 0) {
        part_ml[(vec * splits + split) * 2] = s_m[g];
        part_ml[(vec * splits + split) * 2 + 1] = s_l[g];
      }
    }
  }
}

// Merges the split-K partials of one (seq, q head) per CTA.
__global__ void CombineSplitsKernel(float* out, const float* part_acc, const float* part_ml,
                                    int num_q_heads, int head_dim, int splits) {
  const int64_t vec = static_cast<int64_t>(blockIdx.y) * num_q_heads + blockIdx.x;
  const float* ml = part_ml + vec * splits * 2;
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, ml[2 * s]);
  float l = 0.0f;
  if (m != -INFINITY) {
    for (int s = 0; s < splits; ++s) l += ml[2 * s + 1] * expf(ml[2 * s] - m);
  }
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float o = 0.0f;
    if (l > 0.0f) {
      for (int s = 0; s < splits; ++s) {
        const float w = expf(ml[2 * s] - m);
        o += part_acc[(vec * splits + s) * head_dim + d] * w;
      }
      o /= l;
    }
    out[vec * head_dim + d] = o;
  }
}

// Grow-only device scratch for split-K partials, one per thread (launchers on one thread are
// ordered on their streams by the caller). Grows at most a few times during warm-up; never freed
// (see gemm.cu on why CUDA resources are not released from thread_local destructors).
float* SplitScratch(size_t floats) {
  thread_local float* ptr = nullptr;
  thread_local size_t cap = 0;
  if (floats <= cap) return ptr;
  if (ptr != nullptr) {
    (void)cudaDeviceSynchronize();  // the old buffer may still be in use
    (void)cudaFree(ptr);
    ptr = nullptr;
    cap = 0;
  }
  const cudaError_t err = cudaMalloc(&ptr, floats * sizeof(float));
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    ptr = nullptr;
    internal::RecordLaunchError(internal::CudaErrorStatus(
        err, "cudaMalloc(split-K scratch)", __FILE__, __LINE__));
    return nullptr;
  }
  cap = floats;
  return ptr;
}

int NumSms() {
  static const int sms = [] {
    int dev = 0;
    int n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      return 108;
    }
    return n;
  }();
  return sms;
}

int LanesPerToken(int vecs) {
  int tpt = 1;
  while (tpt * 2 <= vecs && tpt * 2 <= 32) tpt *= 2;
  return tpt;
}

constexpr int kPrefillRows = 16;  // query rows per tile (4 per warp)
constexpr int kPrefillRowsPerWarp = kPrefillRows / kWarps;
constexpr int kPrefillTokens = 32;  // tokens staged per step, one per lane

__global__ void __launch_bounds__(kThreads)
    PrefillKernel(float* out, const float* q, int64_t q_stride, const float* k_cache,
                  const float* v_cache, int64_t block_stride, const int32_t* block_tables,
                  int max_blocks_per_seq, const int32_t* cu_q_lens, const int32_t* context_lens,
                  int num_q_heads, int num_kv_heads, int head_dim, int block_size, float scale) {
  extern __shared__ float smem[];
  const int hd = head_dim;
  float* s_q = smem;                                   // [kPrefillRows][hd]
  float* s_k = s_q + kPrefillRows * hd;                // [kPrefillTokens][hd + 1]
  float* s_v = s_k + kPrefillTokens * (hd + 1);        // [kPrefillTokens][hd]
  float* s_p = s_v + kPrefillTokens * hd;              // [kWarps][kPrefillTokens]
  constexpr int kDimsPerLane = kMaxHeadDim / 32;

  const int seq = blockIdx.y;
  const int head = blockIdx.z;
  const int kv_head = head / (num_q_heads / num_kv_heads);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int q0 = cu_q_lens[seq];
  const int q_len = cu_q_lens[seq + 1] - q0;
  const int first_pos = context_lens[seq] - q_len;
  const int32_t* table = block_tables + static_cast<int64_t>(seq) * max_blocks_per_seq;
  const int num_tiles = (q_len + kPrefillRows - 1) / kPrefillRows;
  const int64_t out_stride = static_cast<int64_t>(num_q_heads) * hd;

  for (int tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    const int r0 = tile * kPrefillRows;
    const int rows = min(kPrefillRows, q_len - r0);
    __syncthreads();  // the previous tile may still read s_q / s_k / s_v
    for (int i = threadIdx.x; i < kPrefillRows * hd; i += kThreads) {
      const int r = i / hd;
      const int d = i % hd;
      s_q[i] = r < rows ? q[(q0 + r0 + r) * q_stride + static_cast<int64_t>(head) * hd + d] * scale
                        : 0.0f;
    }
    float m[kPrefillRowsPerWarp], l[kPrefillRowsPerWarp];
    float acc[kPrefillRowsPerWarp][kDimsPerLane];
#pragma unroll
    for (int i = 0; i < kPrefillRowsPerWarp; ++i) {
      m[i] = -INFINITY;
      l[i] = 0.0f;
#pragma unroll
      for (int j = 0; j < kDimsPerLane; ++j) acc[i][j] = 0.0f;
    }
    const int max_limit = first_pos + r0 + rows;  // the last row sees tokens [0, max_limit)
    for (int c0 = 0; c0 < max_limit; c0 += kPrefillTokens) {
      __syncthreads();  // s_k / s_v of the previous step are no longer read
      const int n = min(kPrefillTokens, max_limit - c0);
      for (int i = threadIdx.x; i < kPrefillTokens * hd; i += kThreads) {
        const int t = i / hd;
        const int d = i % hd;
        float kv = 0.0f, vv = 0.0f;
        if (t < n) {
          const int64_t off = (TokenPtr(k_cache, block_stride, table, c0 + t, block_size,
                                        num_kv_heads, kv_head, hd) - k_cache) + d;
          kv = k_cache[off];
          vv = v_cache[off];
        }
        s_k[t * (hd + 1) + d] = kv;
        s_v[t * hd + d] = vv;
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kPrefillRowsPerWarp; ++i) {
        const int r = warp * kPrefillRowsPerWarp + i;
        if (r >= rows) break;
        const int limit = first_pos + r0 + r + 1;
        if (c0 >= limit) continue;  // warp-uniform
        const bool valid = lane < n && c0 + lane < limit;
        float s = -INFINITY;
        if (valid) {
          float dot = 0.0f;
          for (int d = 0; d < hd; ++d) dot += s_q[r * hd + d] * s_k[lane * (hd + 1) + d];
          s = dot;
        }
        const float cmax = internal::WarpReduceMax(s);
        const float m_new = fmaxf(m[i], cmax);
        const float alpha = expf(m[i] - m_new);
        const float p = valid ? expf(s - m_new) : 0.0f;
        l[i] = l[i] * alpha + internal::WarpReduceSum(p);
        m[i] = m_new;
        s_p[warp * kPrefillTokens + lane] = p;
        __syncwarp();
#pragma unroll
        for (int j = 0; j < kDimsPerLane; ++j) {
          const int d = lane + 32 * j;
          if (d < hd) {
            float a = acc[i][j] * alpha;
            for (int t = 0; t < n; ++t) a += s_p[warp * kPrefillTokens + t] * s_v[t * hd + d];
            acc[i][j] = a;
          }
        }
        __syncwarp();  // s_p is rewritten by the next row
      }
    }
#pragma unroll
    for (int i = 0; i < kPrefillRowsPerWarp; ++i) {
      const int r = warp * kPrefillRowsPerWarp + i;
      if (r >= rows) break;
      float* dst = out + (q0 + r0 + r) * out_stride + static_cast<int64_t>(head) * hd;
      const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
#pragma unroll
      for (int j = 0; j < kDimsPerLane; ++j) {
        const int d = lane + 32 * j;
        if (d < hd) dst[d] = acc[i][j] * inv;
      }
    }
  }
}

bool HeadDimSupported(int head_dim, const char* op) {
  if (head_dim > 0 && head_dim <= kMaxHeadDim) return true;
  internal::RecordLaunchError(InvalidArgumentError(std::string(op) + ": head_dim " +
                                                   std::to_string(head_dim) + " not in [1, " +
                                                   std::to_string(kMaxHeadDim) + "]"));
  return false;
}

}  // namespace

void PagedAttentionDecode(float* out, const float* q, int64_t q_stride, const float* k_cache,
                          const float* v_cache, int64_t block_stride, const int32_t* block_tables,
                          int max_blocks_per_seq, const int32_t* context_lens, int num_seqs,
                          int num_q_heads, int num_kv_heads, int head_dim, int block_size,
                          float scale, Stream stream) {
  if (num_seqs <= 0 || num_q_heads <= 0) return;
  if (!HeadDimSupported(head_dim, "PagedAttentionDecode")) return;
  const cudaStream_t s = internal::AsCudaStream(stream);
  const int group = num_q_heads / num_kv_heads;
  const int group_chunks = (group + kMaxGroup - 1) / kMaxGroup;
  const int ctas = num_kv_heads * group_chunks * num_seqs;
  // Split the context when the (seq, kv head) CTAs cannot fill ~4 CTAs per SM, keeping at least
  // 4 chunks (256 tokens) per split.
  const int max_ctx = max_blocks_per_seq * block_size;
  const int max_splits_by_len = max(1, max_ctx / (4 * kChunk));
  int splits = (4 * NumSms() + ctas - 1) / ctas;
  splits = max(1, min(splits, max_splits_by_len));
  int tokens_per_split = INT_MAX;  // one split: the whole context, whatever its length
  if (splits > 1) {
    tokens_per_split =
        static_cast<int>(internal::CeilDiv(internal::CeilDiv(max_ctx, splits), kChunk) * kChunk);
    splits = static_cast<int>(internal::CeilDiv(max_ctx, tokens_per_split));
  }
  float* part_acc = nullptr;
  float* part_ml = nullptr;
  if (splits > 1) {
    const size_t vecs = static_cast<size_t>(num_seqs) * num_q_heads * splits;
    float* scratch = SplitScratch(vecs * (head_dim + 2));
    if (scratch == nullptr) return;
    part_acc = scratch;
    part_ml = scratch + vecs * head_dim;
  }
  const dim3 grid(static_cast<unsigned>(num_kv_heads * group_chunks),
                  static_cast<unsigned>(num_seqs), static_cast<unsigned>(splits));
  const bool vec4 = head_dim % 4 == 0 && reinterpret_cast<uintptr_t>(k_cache) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(v_cache) % 16 == 0 && block_stride % 4 == 0;
  if (vec4) {
    DecodeKernel<4><<<grid, kThreads, 0, s>>>(
        out, part_acc, part_ml, q, q_stride, k_cache, v_cache, block_stride, block_tables,
        max_blocks_per_seq, context_lens, num_q_heads, num_kv_heads, head_dim, block_size, scale,
        group_chunks, tokens_per_split, LanesPerToken(head_dim / 4));
  } else {
    DecodeKernel<1><<<grid, kThreads, 0, s>>>(
        out, part_acc, part_ml, q, q_stride, k_cache, v_cache, block_stride, block_tables,
        max_blocks_per_seq, context_lens, num_q_heads, num_kv_heads, head_dim, block_size, scale,
        group_chunks, tokens_per_split, LanesPerToken(head_dim));
  }
  if (splits > 1) {
    CombineSplitsKernel<<<dim3(static_cast<unsigned>(num_q_heads),
                               static_cast<unsigned>(num_seqs)),
                          head_dim >= 128 ? 128 : 64, 0, s>>>(out, part_acc, part_ml,
                                                               num_q_heads, head_dim, splits);
  }
}

void PagedAttentionPrefill(float* out, const float* q, int64_t q_stride, const float* k_cache,
                           const float* v_cache, int64_t block_stride, const int32_t* block_tables,
                           int max_blocks_per_seq, const int32_t* cu_q_lens,
                           const int32_t* context_lens, int num_seqs, int num_q_heads,
                           int num_kv_heads, int head_dim, int block_size, float scale,
                           Stream stream) {
  if (num_seqs <= 0 || num_q_heads <= 0) return;
  if (!HeadDimSupported(head_dim, "PagedAttentionPrefill")) return;
  const size_t smem = sizeof(float) * (static_cast<size_t>(kPrefillRows) * head_dim +
                                       static_cast<size_t>(kPrefillTokens) * (head_dim + 1) +
                                       static_cast<size_t>(kPrefillTokens) * head_dim +
                                       static_cast<size_t>(kWarps) * kPrefillTokens);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        PrefillKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      internal::RecordLaunchError(internal::CudaErrorStatus(
          err, "cudaFuncSetAttribute(PrefillKernel, MaxDynamicSharedMemorySize)", __FILE__,
          __LINE__));
      return;
    }
  }
  // Tile slots per (seq, head): enough CTAs for ~4 per SM; each loops over its share of tiles.
  const int64_t pairs = static_cast<int64_t>(num_seqs) * num_q_heads;
  const int64_t slots = internal::CeilDiv(4 * static_cast<int64_t>(NumSms()), pairs);
  const dim3 grid(static_cast<unsigned>(slots < 64 ? (slots < 1 ? 1 : slots) : 64),
                  static_cast<unsigned>(num_seqs), static_cast<unsigned>(num_q_heads));
  PrefillKernel<<<grid, kThreads, smem, internal::AsCudaStream(stream)>>>(
      out, q, q_stride, k_cache, v_cache, block_stride, block_tables, max_blocks_per_seq,
      cu_q_lens, context_lens, num_q_heads, num_kv_heads, head_dim, block_size, scale);
}

}  // namespace kvmesh::kernels::cuda
