// Deterministic driver for fuzz targets (files named *_fuzz.cc that define
// LLVMFuzzerTestOneInput). Runs under ctest on every build, including ASan/UBSan, with a fixed
// seed so a failure reproduces: random byte strings, then mutations (bit flips, byte sets,
// truncations, splices, length-field smashing) of the seed inputs the target offers through the
// optional KvmeshFuzzSeeds() hook, plus any corpus files named on the command line.
//
// Usage: <target> [--iterations=N] [--seed=S] [FILE...]
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// Optional: valid inputs to mutate. Defined by the target if it has any.
std::vector<std::string> KvmeshFuzzSeeds() __attribute__((weak));

namespace {

void RunOne(const std::string& input) {
  // Copy into an exactly-sized heap buffer so ASan catches any read past the end.
  std::vector<uint8_t> buf(input.begin(), input.end());
  LLVMFuzzerTestOneInput(buf.empty() ? nullptr : buf.data(), buf.size());
}

std::string Mutate(const std::string& in, std::mt19937_64& rng,
                   const std::vector<std::string>& pool) {
  std::string s = in;
  int rounds = 1 + static_cast<int>(rng() % 4);
  for (int r = 0; r < rounds; ++r) {
    switch (rng() % 8) {
      case 0:  // flip a bit
        if (!s.empty()) s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // set a byte to an interesting value
        if (!s.empty()) {
          static const uint8_t kVals[] = {0x00, 0xff, 0x7f, 0x80, 0xc0, 0xc1, 0xd9, 0xda, 0xdb,
                                          0xdc, 0xdd, 0xde, 0xdf, 0x90, 0x9f, 0xcf, 0xd3};
          s[rng() % s.size()] = static_cast<char>(kVals[rng() % sizeof(kVals)]);
        }
        break;
      case 2:  // truncate
        if (!s.empty()) s.resize(rng() % s.size());
        break;
      case 3:  // insert random bytes
        for (int i = 0, n = 1 + static_cast<int>(rng() % 8); i < n; ++i) {
          s.insert(s.begin() + static_cast<long>(rng() % (s.size() + 1)),
                   static_cast<char>(rng() & 0xff));
        }
        break;
      case 4:  // smash four bytes with a large length
        if (s.size() >= 4) {
          size_t at = rng() % (s.size() - 3);
          uint32_t v = (rng() % 2) ? 0xffffffffu : 0x7fffffffu;
          std::memcpy(&s[at], &v, 4);
        }
        break;
      case 5:  // splice with another seed
        if (!pool.empty()) {
          const std::string& o = pool[rng() % pool.size()];
          size_t cut = s.empty() ? 0 : rng() % s.size();
          size_t from = o.empty() ? 0 : rng() % o.size();
          s = s.substr(0, cut) + o.substr(from);
        }
        break;
      case 6:  // duplicate a chunk
        if (!s.empty()) {
          size_t a = rng() % s.size();
          size_t len = 1 + rng() % (s.size() - a);
          s.insert(a, s.substr(a, len));
        }
        break;
      default:  // erase a chunk
        if (!s.empty()) {
          size_t a = rng() % s.size();
          s.erase(a, 1 + rng() % (s.size() - a));
        }
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  long iterations = 20000;
  unsigned long long seed = 1;
  std::vector<std::string> pool;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--iterations=", 13) == 0) {
      iterations = std::strtol(argv[i] + 13, nullptr, 10);
    } else if (std::strncmp(argv[i], "--seed=", 7) == 0) {
      seed = std::strtoull(argv[i] + 7, nullptr, 10);
    } else {
      std::ifstream f(argv[i], std::ios::binary);
      if (!f) {
        std::fprintf(stderr, "fuzz_driver: cannot read %s\n", argv[i]);
        return 2;
      }
      pool.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
  }
  if (KvmeshFuzzSeeds) {
    for (auto& s : KvmeshFuzzSeeds()) pool.push_back(std::move(s));
  }
  std::mt19937_64 rng(seed);
  for (const auto& s : pool) RunOne(s);
  RunOne("");
  for (long it = 0; it < iterations; ++it) {
    if (pool.empty() || it % 4 == 0) {
      std::string s(rng() % 256, '\0');
      for (char& c : s) c = static_cast<char>(rng() & 0xff);
      RunOne(s);
    } else {
      RunOne(Mutate(pool[rng() % pool.size()], rng, pool));
    }
  }
  std::printf("fuzz_driver: %ld inputs (%zu seeds), seed %llu, no crash\n", iterations + 1,
              pool.size(), seed);
  return 0;
}
