#include "kv/kv_event_codec.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kvmesh::kv {
namespace {

// A tiny msgpack builder for hand-made inputs. It deliberately uses the WIDEST encodings where
// noted, so the decoder is tested on forms our encoder never emits.
struct Mp {
  std::string b;
  Mp& Raw(std::initializer_list<int> bytes) {
    for (int x : bytes) b.push_back(static_cast<char>(x));
    return *this;
  }
  Mp& BE(uint64_t v, int width) {
    for (int i = width - 1; i >= 0; --i) b.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  Mp& Arr(size_t n) { return n < 16 ? Raw({static_cast<int>(0x90 | n)}) : Raw({0xdc}).BE(n, 2); }
  Mp& Arr32(size_t n) { return Raw({0xdd}).BE(n, 4); }
  Mp& Map(size_t n) { return n < 16 ? Raw({static_cast<int>(0x80 | n)}) : Raw({0xde}).BE(n, 2); }
  Mp& Map32(size_t n) { return Raw({0xdf}).BE(n, 4); }
  Mp& Str(std::string_view s) {
    if (s.size() < 32) {
      Raw({static_cast<int>(0xa0 | s.size())});
    } else {
      Raw({0xd9}).BE(s.size(), 1);
    }
    b.append(s);
    return *this;
  }
  Mp& Str32(std::string_view s) {
    Raw({0xdb}).BE(s.size(), 4);
    b.append(s);
    return *this;
  }
  Mp& Bin(std::string_view s) {
    Raw({0xc4}).BE(s.size(), 1);
    b.append(s);
    return *this;
  }
  Mp& U64(uint64_t v) { return Raw({0xcf}).BE(v, 8); }  // always the 9-byte form
  Mp& I64(int64_t v) { return Raw({0xd3}).BE(static_cast<uint64_t>(v), 8); }
  Mp& Fix(int v) { return Raw({v & 0xff}); }  // fixint, -32..127
  Mp& Nil() { return Raw({0xc0}); }
  Mp& True() { return Raw({0xc3}); }
  Mp& F64(double d) {
    uint64_t bits;
    std::memcpy(&bits, &d, 8);
    return Raw({0xcb}).BE(bits, 8);
  }
  Mp& F32(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    return Raw({0xca}).BE(bits, 4);
  }
  Mp& Add(const Mp& o) {
    b += o.b;
    return *this;
  }
};

BlockStored FullStored() {
  BlockStored s;
  s.parent_hash = 0xfedcba9876543210ull;
  s.hashes = {1, 0x8000000000000000ull, std::numeric_limits<uint64_t>::max()};
  s.token_ids = {0, 1, 127, 128, 65535, 65536, 4294967295u};
  s.block_size = 16;
  s.lora_id = -7;
  s.lora_name = std::string(40, 'x');
  s.medium = Medium::kG2;
  return s;
}

std::vector<KvEventBatch> SampleBatches() {
  std::vector<KvEventBatch> out;
  out.push_back({});  // empty batch, ts 0, no dp_rank
  KvEventBatch a;
  a.ts = 1712345678.25;
  a.dp_rank = 3;
  a.events.push_back(FullStored());
  BlockStored minimal;  // all optional fields absent
  minimal.hashes = {42};
  a.events.push_back(minimal);
  a.events.push_back(BlockRemoved{{5, 6, 7}, Medium::kG3});
  a.events.push_back(BlockRemoved{});
  a.events.push_back(AllBlocksCleared{});
  out.push_back(a);
  KvEventBatch big;
  big.ts = -1.5;
  big.dp_rank = -2;
  BlockStored many;
  for (uint64_t i = 0; i < 70000; ++i) many.hashes.push_back(i * 0x9e3779b97f4a7c15ull);
  many.block_size = 70000;
  many.lora_id = std::numeric_limits<int64_t>::min();
  many.lora_name = std::string(70000, 'n');  // str32
  big.events.assign(20, AllBlocksCleared{});
  big.events.push_back(many);
  out.push_back(big);
  return out;
}

TEST(KvEventCodec, RoundTripsEveryEventType) {
  for (const KvEventBatch& batch : SampleBatches()) {
    std::string bytes = EncodeKvEventBatch(batch);
    DecodeLimits limits;
    limits.max_string_bytes = 1 << 20;
    auto decoded = DecodeKvEventBatch(bytes, limits);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    EXPECT_EQ(*decoded, batch);
  }
}

TEST(KvEventCodec, EmitsVllmTaggedArrayLayout) {
  KvEventBatch batch;
  batch.ts = 2.5;
  batch.dp_rank = 1;
  BlockStored s;
  s.hashes = {0xffffffffffffffffull, 3};
  s.parent_hash = 200;
  s.token_ids = {1, 300};
  s.block_size = 2;
  batch.events.push_back(s);
  batch.events.push_back(BlockRemoved{{9}, Medium::kG2});
  batch.events.push_back(AllBlocksCleared{});
  Mp want;
  want.Arr(3).F64(2.5).Arr(3);
  want.Arr(8).Str("BlockStored").Arr(2).U64(0xffffffffffffffffull).Fix(3);
  want.Raw({0xcc, 200}).Arr(2).Fix(1).Raw({0xcd, 0x01, 0x2c}).Fix(2).Nil().Str("GPU").Nil();
  want.Arr(3).Str("BlockRemoved").Arr(1).Fix(9).Str("CPU");
  want.Arr(1).Str("AllBlocksCleared");
  want.Fix(1);
  EXPECT_EQ(EncodeKvEventBatch(batch), want.b);

  batch.dp_rank.reset();  // omitted, like msgspec's omit_defaults
  batch.events.clear();
  EXPECT_EQ(EncodeKvEventBatch(batch), Mp().Arr(2).F64(2.5).Arr(0).b);
}

TEST(KvEventCodec, DecodesTaggedArrayFormWithWideEncodingsAndHashVariants) {
  std::string sha(32, '\0');
  for (int i = 0; i < 32; ++i) sha[i] = static_cast<char>(i + 1);
  Mp m;
  m.Arr32(3).F32(1.5f).Arr32(2);
  m.Arr32(8).Str32("BlockStored");
  m.Arr32(4).I64(-1).U64(0x8000000000000001ull).Bin(sha).Bin("\x01\x02\x03");
  m.I64(-2);                  // parent hash, negative int64
  m.Arr(2).U64(5).Fix(6);     // token ids
  m.U64(4).I64(-3).Str("disk").Str("my-lora");
  m.Arr(3).Str("BlockRemoved").Arr(1).Fix(1).Nil();  // nil medium -> GPU
  m.U64(7);                    // dp_rank as uint64 encoding
  auto d = DecodeKvEventBatch(m.b);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->ts, 1.5);
  EXPECT_EQ(d->dp_rank, 7);
  ASSERT_EQ(d->events.size(), 2u);
  const auto& s = std::get<BlockStored>(d->events[0]);
  EXPECT_EQ(s.hashes, (std::vector<BlockHash>{0xffffffffffffffffull, 0x8000000000000001ull,
                                              0x191a1b1c1d1e1f20ull, 0x010203ull}));
  EXPECT_EQ(s.parent_hash, 0xfffffffffffffffeull);
  EXPECT_EQ(s.token_ids, (std::vector<uint32_t>{5, 6}));
  EXPECT_EQ(s.block_size, 4u);
  EXPECT_EQ(s.lora_id, -3);
  EXPECT_EQ(s.medium, Medium::kG3);
  EXPECT_EQ(s.lora_name, "my-lora");
  EXPECT_EQ(std::get<BlockRemoved>(d->events[1]), (BlockRemoved{{1}, Medium::kG1}));
}

TEST(KvEventCodec, AcceptsMissingTrailingOptionalFieldsAndIgnoresExtraOnes) {
  Mp m;
  m.Arr(2).Fix(9).Arr(4);  // batch without dp_rank
  m.Arr(5).Str("BlockStored").Arr(1).Fix(1).Nil().Arr(0).Fix(16);   // no lora_id/medium/name
  m.Arr(2).Str("BlockRemoved").Arr(1).Fix(2);                         // no medium
  // vLLM >= 0.11 extras: extra_keys, group_idx, kv_cache_spec_kind, sliding window, + nested.
  m.Arr(14).Str("BlockStored").Arr(1).Fix(3).Fix(1).Arr(0).Fix(16).Nil().Str("CPU").Nil();
  m.Arr(1).Arr(2).Str("mm").Map(1).Str("k").Arr(0).Fix(0).Str("full").Nil().True().F64(1);
  m.Arr(4).Str("AllBlocksCleared").Fix(1).Str("x").Map(0);
  auto d = DecodeKvEventBatch(m.b);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->ts, 9.0);
  EXPECT_FALSE(d->dp_rank.has_value());
  BlockStored want0;
  want0.hashes = {1};
  want0.block_size = 16;
  EXPECT_EQ(std::get<BlockStored>(d->events[0]), want0);
  EXPECT_EQ(std::get<BlockRemoved>(d->events[1]), (BlockRemoved{{2}, Medium::kG1}));
  BlockStored want2;
  want2.hashes = {3};
  want2.parent_hash = 1;
  want2.block_size = 16;
  want2.medium = Medium::kG2;
  EXPECT_EQ(std::get<BlockStored>(d->events[2]), want2);
  EXPECT_TRUE(std::holds_alternative<AllBlocksCleared>(d->events[3]));

  // dp_rank nil and extra trailing batch fields.
  auto nil_rank = DecodeKvEventBatch(Mp().Arr(4).Fix(1).Arr(0).Nil().Str("future").b);
  ASSERT_TRUE(nil_rank.ok()) << nil_rank.status().ToString();
  EXPECT_FALSE(nil_rank->dp_rank.has_value());
  auto neg_rank = DecodeKvEventBatch(Mp().Arr(3).Fix(1).Arr(0).Fix(-5).b);
  ASSERT_TRUE(neg_rank.ok());
  EXPECT_EQ(neg_rank->dp_rank, -5);
}

TEST(KvEventCodec, DecodesMapFormInAnyKeyOrderIgnoringUnknownKeys) {
  Mp m;
  m.Map(4).Str("events").Arr(3);
  m.Map(9).Str("block_size").Fix(16).Str("unknown").Map(1).Fix(1).Arr(0);
  m.Str("block_hashes").Arr(2).I64(-9).Fix(8).Str("parent_block_hash").Nil();
  m.Str("token_ids").Arr(1).Fix(5).Str("lora_id").Nil().Str("medium").Str("GPU");
  m.Str("lora_name").Str("l").Str("type").Str("BlockStored");  // tag after the fields
  m.Map(3).Str("type").Str("BlockRemoved").Str("block_hashes").Arr(1).Bin("\xaa")
      .Str("group_idx").Fix(0);
  m.Map(1).Str("type").Str("AllBlocksCleared");
  m.Str("extra").Str("ignored").Str("ts").F64(3.25).Str("data_parallel_rank").Fix(2);
  auto d = DecodeKvEventBatch(m.b);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->ts, 3.25);
  EXPECT_EQ(d->dp_rank, 2);
  BlockStored want;
  want.hashes = {static_cast<uint64_t>(int64_t{-9}), 8};
  want.token_ids = {5};
  want.block_size = 16;
  want.lora_name = "l";
  EXPECT_EQ(std::get<BlockStored>(d->events[0]), want);
  EXPECT_EQ(std::get<BlockRemoved>(d->events[1]), (BlockRemoved{{0xaa}, Medium::kG1}));
  EXPECT_TRUE(std::holds_alternative<AllBlocksCleared>(d->events[2]));

  // Tagged-array events inside a map batch, and a map batch without dp_rank.
  auto mixed = DecodeKvEventBatch(
      Mp().Map(2).Str("ts").Fix(1).Str("events").Arr(1).Arr(1).Str("AllBlocksCleared").b);
  ASSERT_TRUE(mixed.ok()) << mixed.status().ToString();
  EXPECT_FALSE(mixed->dp_rank.has_value());
}

TEST(KvEventCodec, FramesRoundTripWithBigEndianSeq) {
  KvEventBatch batch = SampleBatches()[1];
  auto frames = EncodeKvEventFrames("kv@worker-1", 0x0102030405060708ull, batch);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[1], std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  auto d = DecodeKvEventFrames(frames);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->topic, "kv@worker-1");
  EXPECT_EQ(d->seq, 0x0102030405060708ull);
  EXPECT_EQ(d->batch, batch);
  EXPECT_EQ(*DecodeKvEventSeq(EncodeKvEventSeq(std::numeric_limits<uint64_t>::max())),
            std::numeric_limits<uint64_t>::max());
}

TEST(KvEventCodec, RejectsBadFrames) {
  auto frames = EncodeKvEventFrames("", 1, SampleBatches()[1]);
  auto two = std::vector<std::string>(frames.begin(), frames.begin() + 2);
  auto r = DecodeKvEventFrames(two);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("got 2"), std::string::npos) << r.status().ToString();

  auto four = frames;
  four.push_back("x");
  EXPECT_EQ(DecodeKvEventFrames(four).status().code(), StatusCode::kInvalidArgument);

  auto short_seq = frames;
  short_seq[1] = "\x01\x02\x03";
  r = DecodeKvEventFrames(short_seq);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("8 bytes"), std::string::npos);

  auto long_topic = frames;
  long_topic[0] = std::string(5000, 't');
  EXPECT_EQ(DecodeKvEventFrames(long_topic).status().code(), StatusCode::kInvalidArgument);

  auto bad_payload = frames;
  bad_payload[2].pop_back();
  r = DecodeKvEventFrames(bad_payload);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(r.status().message().rfind("seq 1: ", 0), 0u) << r.status().ToString();
}

TEST(KvEventCodec, EveryTruncationIsAnErrorNotACrash) {
  std::string bytes = EncodeKvEventBatch(SampleBatches()[1]);
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto d = DecodeKvEventBatch(std::string_view(bytes).substr(0, n));
    ASSERT_FALSE(d.ok()) << "prefix " << n << " decoded";
    EXPECT_EQ(d.status().code(), StatusCode::kDataLoss) << n << ": " << d.status().ToString();
  }
  auto trailing = DecodeKvEventBatch(bytes + '\0');
  EXPECT_EQ(trailing.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(trailing.status().message().find("1 trailing bytes"), std::string::npos);
}

TEST(KvEventCodec, HugeDeclaredLengthsFailBeforeAllocating) {
  // Each declares ~4G elements or bytes in a tiny input; a decoder that reserved first would
  // abort with bad_alloc or trip ASan's allocation limit.
  const std::vector<std::string> inputs = {
      Mp().Raw({0xdd, 0xff, 0xff, 0xff, 0xff}).b,
      Mp().Arr(2).Fix(1).Raw({0xdd, 0xff, 0xff, 0xff, 0xff}).b,
      Mp().Arr(2).Fix(1).Arr(1).Arr(5).Str("BlockStored").Raw({0xdd, 0xff, 0xff, 0xff, 0xff}).b,
      Mp().Arr(2).Fix(1).Arr(1).Arr(3).Str("BlockRemoved").Arr(0).Raw({0xdb, 0xff, 0xff, 0xff, 0xff}).b,
      Mp().Raw({0xdf, 0xff, 0xff, 0xff, 0xff}).b,
      Mp().Arr(2).Fix(1).Arr(1).Arr(3).Str("BlockRemoved").Arr(1).Raw({0xc6, 0xff, 0xff, 0xff,
                                                                        0xff}).b,
  };
  for (const auto& in : inputs) {
    auto d = DecodeKvEventBatch(in);
    EXPECT_EQ(d.status().code(), StatusCode::kDataLoss) << d.status().ToString();
    EXPECT_NE(d.status().message().find("declares"), std::string::npos) << d.status().ToString();
    EXPECT_NE(d.status().message().find("byte offset"), std::string::npos);
  }
}

TEST(KvEventCodec, RejectsWrongShapesWithFieldAndEventIndex) {
  auto Batch = [](const Mp& event) { return Mp().Arr(2).Fix(1).Arr(2).Arr(1).Str("AllBlocksCleared").Add(event).b; };
  struct Case {
    std::string input;
    std::string want;  // substring of the message
  };
  const std::vector<Case> cases = {
      {Batch(Mp().Arr(1).Str("BlockEvicted")), "unknown event tag \"BlockEvicted\""},
      {Batch(Mp().Arr(2).Str("BlockStored").Arr(0)), "needs at least 4"},
      {Batch(Mp().Arr(5).Str("BlockStored").Arr(1).Str("h").Nil().Arr(0).Fix(1)),
       "expected int or bin block hash, got str"},
      {Batch(Mp().Arr(5).Str("BlockStored").Arr(0).Nil().Arr(1).Fix(-1).Fix(1)),
       "out of range"},
      {Batch(Mp().Arr(5).Str("BlockStored").Arr(0).Nil().Arr(0).U64(1ull << 32)), "out of range"},
      {Batch(Mp().Arr(3).Str("BlockRemoved").Arr(0).Str("HBM")), "unknown medium \"HBM\""},
      {Batch(Mp().Arr(3).Str("BlockRemoved").Arr(0).Fix(1)), "expected str, got int"},
      {Batch(Mp().Arr(6).Str("BlockStored").Arr(0).Nil().Arr(0).Fix(1).U64(1ull << 63)),
       "exceeds int64"},
      {Batch(Mp().Map(1).Str("block_hashes").Arr(0)), "no \"type\" key"},
      {Batch(Mp().Map(1).Str("type").Str("BlockStored")), "missing block_hashes"},
      {Batch(Mp().Arr(0)), "no type tag"},
      {Batch(Mp().Fix(3)), "expected array or map, got int"},
      {Batch(Mp().Arr(1).Fix(3)), "expected str, got int"},
  };
  for (const Case& c : cases) {
    auto d = DecodeKvEventBatch(c.input);
    ASSERT_FALSE(d.ok()) << c.want;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument) << d.status().ToString();
    EXPECT_NE(d.status().message().find(c.want), std::string::npos) << d.status().ToString();
    EXPECT_EQ(d.status().message().rfind("event 1: ", 0), 0u) << d.status().ToString();
  }
  EXPECT_EQ(DecodeKvEventBatch(Mp().Str("x").b).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeKvEventBatch(Mp().Arr(1).Fix(1).b).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeKvEventBatch(Mp().Arr(2).Str("1").Arr(0).b).status().code(),
            StatusCode::kInvalidArgument);
  auto nan = DecodeKvEventBatch(Mp().Arr(2).F64(std::nan("")).Arr(0).b);
  EXPECT_NE(nan.status().message().find("not finite"), std::string::npos);
  EXPECT_EQ(DecodeKvEventBatch(Mp().Map(1).Str("ts").Fix(1).b).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeKvEventBatch(Mp().Raw({0xc1}).b).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(DecodeKvEventBatch("").status().code(), StatusCode::kDataLoss);
}

TEST(KvEventCodec, EnforcesLimits) {
  DecodeLimits limits;
  limits.max_events_per_batch = 2;
  limits.max_hashes_per_event = 3;
  limits.max_tokens_per_event = 3;
  limits.max_string_bytes = 32;  // vLLM keys and tags need up to 28
  limits.max_depth = 6;
  auto Event = [](const Mp& e) { return Mp().Arr(2).Fix(1).Arr(1).Add(e).b; };
  auto Msg = [&](const std::string& in) { return DecodeKvEventBatch(in, limits).status().message(); };
  EXPECT_NE(Msg(Mp().Arr(2).Fix(1).Arr(3).Arr(1).Str("AllBlocksCleared")
                    .Arr(1).Str("AllBlocksCleared").Arr(1).Str("AllBlocksCleared").b)
                .find("max_events_per_batch"),
            std::string::npos);
  EXPECT_NE(Msg(Event(Mp().Arr(2).Str("BlockRemoved").Arr(4).Fix(1).Fix(2).Fix(3).Fix(4)))
                .find("max_hashes_per_event"),
            std::string::npos);
  EXPECT_NE(Msg(Event(Mp().Arr(5).Str("BlockStored").Arr(0).Nil().Arr(4).Fix(1).Fix(2).Fix(3)
                          .Fix(4).Fix(1)))
                .find("max_tokens_per_event"),
            std::string::npos);
  EXPECT_NE(Msg(Event(Mp().Arr(8).Str("BlockStored").Arr(0).Nil().Arr(0).Fix(1).Nil().Nil()
                          .Str(std::string(33, 'n'))))
                .find("max_string_bytes"),
            std::string::npos);
  Mp deep;
  deep.Arr(3).Str("BlockRemoved").Arr(0).Nil();
  std::string deep_event = deep.b;
  deep_event[0] = static_cast<char>(0x94);  // one extra trailing field, nested 10 deep
  for (int i = 0; i < 10; ++i) deep_event += static_cast<char>(0x91);
  deep_event += static_cast<char>(0xc0);
  EXPECT_NE(Msg(Event(Mp().Raw({}).Add(Mp{deep_event}))).find("max_depth"), std::string::npos);
  DecodeLimits tiny;
  tiny.max_payload_bytes = 4;
  EXPECT_NE(DecodeKvEventBatch(Mp().Arr(2).Fix(1).Arr(0).Nil().Nil().b, tiny).status().message()
                .find("max_payload_bytes"),
            std::string::npos);
  // The same inputs pass with default limits.
  EXPECT_TRUE(DecodeKvEventBatch(Event(Mp{deep_event})).ok());
}

}  // namespace
}  // namespace kvmesh::kv
