// Register-only throughput of this CPU: the ceiling the binary kernels are measured against.
//
// xor_popcount_peak runs the inner step of a binary dot product (XOR two words, popcount,
// add to an accumulator) on values that never leave the registers, with 8 independent
// accumulators so that latency hides behind throughput; fma_peak does the same for float32
// multiply-adds, the step of PyTorch's float convolution. The ratio of the two is the most a
// popcount kernel can gain over a float kernel running at its own peak on this machine.

#include <chrono>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace zoo_peak {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr int64_t kChunk = 1 << 16;  // iterations between looks at the clock

// The asm statement makes the compiler assume `v` changed, so the loop body is not hoisted.
#define ZOO_CLOBBER(v) __asm__ volatile("" : "+x"(v))
#define ZOO_CLOBBER_R(v) __asm__ volatile("" : "+r"(v))

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define ZOO_PEAK_X86 1

__attribute__((target("avx512f,avx512vpopcntdq"))) double xor_popcount_avx512(double seconds,
                                                                               int64_t* sink) {
  __m512i a[8], acc[8];
  __m512i b = _mm512_set1_epi64(0x5555555555555555LL);
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm512_set1_epi64(0x0123456789abcdefLL * (i + 1));
    acc[i] = _mm512_setzero_si512();
  }
  const Clock::time_point t0 = Clock::now();
  int64_t iters = 0;
  for (; iters == 0 || seconds_since(t0) < seconds; iters += kChunk)
  for (int64_t k = 0; k < kChunk; ++k) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
      acc[i] = _mm512_add_epi64(acc[i], _mm512_popcnt_epi64(_mm512_xor_si512(a[i], b)));
    __asm__ volatile("" : "+v"(b));
  }
  const double s = seconds_since(t0);
  for (int i = 0; i < 8; ++i) *sink += _mm512_reduce_add_epi64(acc[i]);
  return iters * 64.0 / s;  // 8 vectors of 8 words per iteration
}

// AVX2 has no vector popcount: the kernels' step on nibble-split words (two XORs, two vpshufb
// table lookups, two byte adds per 4 words), byte counters widened with vpsadbw every 31 steps.
__attribute__((target("avx2"))) double xor_popcount_avx2(double seconds, int64_t* sink) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  __m256i lo[4], hi[4], acc[4], tot = _mm256_setzero_si256();
  __m256i blo = _mm256_set1_epi8(0x05), bhi = _mm256_set1_epi8(0x0a);
  for (int i = 0; i < 4; ++i) {
    lo[i] = _mm256_set1_epi8(static_cast<char>(i + 1));
    hi[i] = _mm256_set1_epi8(static_cast<char>(i + 7));
  }
  const Clock::time_point t0 = Clock::now();
  int64_t outer = 0;
  for (; outer == 0 || seconds_since(t0) < seconds; outer += kChunk / 31)
  for (int64_t o = 0; o < kChunk / 31; ++o) {
    for (int i = 0; i < 4; ++i) acc[i] = _mm256_setzero_si256();
    for (int k = 0; k < 31; ++k) {
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const __m256i c = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(lo[i], blo)),
                                          _mm256_shuffle_epi8(lut, _mm256_xor_si256(hi[i], bhi)));
        acc[i] = _mm256_add_epi8(acc[i], c);
      }
      ZOO_CLOBBER(blo);
      ZOO_CLOBBER(bhi);
    }
    for (int i = 0; i < 4; ++i)
      tot = _mm256_add_epi64(tot, _mm256_sad_epu8(acc[i], _mm256_setzero_si256()));
  }
  const double s = seconds_since(t0);
  alignas(32) int64_t t[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), tot);
  *sink += t[0] + t[1] + t[2] + t[3];
  return outer * 31 * 16.0 / s;  // 4 vectors of 4 words per step
}

__attribute__((target("avx512f"))) double fma_avx512(double seconds, float* sink) {
  __m512 f[12];
  __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-3f);
  for (int i = 0; i < 12; ++i) f[i] = _mm512_set1_ps(static_cast<float>(i));
  const Clock::time_point t0 = Clock::now();
  int64_t iters = 0;
  for (; iters == 0 || seconds_since(t0) < seconds; iters += kChunk)
  for (int64_t k = 0; k < kChunk; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) f[i] = _mm512_fmadd_ps(f[i], x, y);
    __asm__ volatile("" : "+v"(x));
  }
  const double s = seconds_since(t0);
  for (int i = 0; i < 12; ++i) *sink += _mm512_reduce_add_ps(f[i]);
  return iters * 12.0 * 16 / s;
}

__attribute__((target("avx2,fma"))) double fma_avx2(double seconds, float* sink) {
  __m256 f[12];
  __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-3f);
  for (int i = 0; i < 12; ++i) f[i] = _mm256_set1_ps(static_cast<float>(i));
  const Clock::time_point t0 = Clock::now();
  int64_t iters = 0;
  for (; iters == 0 || seconds_since(t0) < seconds; iters += kChunk)
  for (int64_t k = 0; k < kChunk; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) f[i] = _mm256_fmadd_ps(f[i], x, y);
    ZOO_CLOBBER(x);
  }
  const double s = seconds_since(t0);
  alignas(32) float t[8];
  for (int i = 0; i < 12; ++i) {
    _mm256_store_ps(t, f[i]);
    for (float v : t) *sink += v;
  }
  return iters * 12.0 * 8 / s;
}
#else
#define ZOO_PEAK_X86 0
#endif

double xor_popcount_scalar(double seconds, int64_t* sink) {
  uint64_t a[8], acc[8] = {};
  uint64_t b = 0x5555555555555555ULL;
  for (int i = 0; i < 8; ++i) a[i] = 0x0123456789abcdefULL * (i + 1);
  const Clock::time_point t0 = Clock::now();
  int64_t iters = 0;
  for (; iters == 0 || seconds_since(t0) < seconds; iters += kChunk)
  for (int64_t k = 0; k < kChunk; ++k) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] += __builtin_popcountll(a[i] ^ b);
    ZOO_CLOBBER_R(b);
  }
  const double s = seconds_since(t0);
  for (uint64_t v : acc) *sink += static_cast<int64_t>(v);
  return iters * 8.0 / s;
}

double fma_scalar(double seconds, float* sink) {
  float f[8];
  float x = 0.999f, y = 1e-3f;
  for (int i = 0; i < 8; ++i) f[i] = static_cast<float>(i);
  const Clock::time_point t0 = Clock::now();
  int64_t iters = 0;
  for (; iters == 0 || seconds_since(t0) < seconds; iters += kChunk)
  for (int64_t k = 0; k < kChunk; ++k) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) f[i] = f[i] * x + y;
    __asm__ volatile("" : "+r"(x));
  }
  const double s = seconds_since(t0);
  for (float v : f) *sink += v;
  return iters * 8.0 / s;
}

}  // namespace

// 64-bit words per second through XOR + popcount + add on one thread, for a backend code
// (0 portable, 1 avx2, 2 avx512: the codes of xnor.cpp).
double xor_popcount_peak(int64_t backend, double seconds) {
  int64_t sink = 0;
  double rate;
#if ZOO_PEAK_X86
  if (backend == 2)
    rate = xor_popcount_avx512(seconds, &sink);
  else if (backend == 1)
    rate = xor_popcount_avx2(seconds, &sink);
  else
#endif
    rate = xor_popcount_scalar(seconds, &sink);
  volatile int64_t keep = sink;  // the results are used, so the loops are not removed
  (void)keep;
  return rate;
}

// float32 multiply-adds per second on one thread with the widest FMA this CPU has.
double fma_peak(double seconds) {
  float sink = 0.f;
  double rate;
#if ZOO_PEAK_X86
  if (__builtin_cpu_supports("avx512f"))
    rate = fma_avx512(seconds, &sink);
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    rate = fma_avx2(seconds, &sink);
  else
#endif
    rate = fma_scalar(seconds, &sink);
  volatile float keep = sink;
  (void)keep;
  return rate;
}

}  // namespace zoo_peak
