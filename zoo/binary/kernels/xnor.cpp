// 1-bit XNOR convolution and linear kernels for zoo (a PyTorch C++ extension).
//
// A binary dot product of n signs is  n - 2 * popcount(bits(a) XOR bits(w)),  where a bit is
// 0 for a value >= 0 (sign +1, -0.0 included) and 1 otherwise (sign -1, NaN included, as in
// the float layers' `x >= 0 ? 1 : -1`). Zero padding reads sign(0) = +1, a 0 bit; so do the
// unused bits of a channel group's last 64-bit word, in activations and weights alike: they
// XOR to 0 and never count, and n is the number of real products (Cg * kh * kw).
//
// Layouts (reference.py packs the weights with the same rules):
//   activations  [N, H, W, G, Wg] uint64, Wg = ceil(Cg / 64): channel c of a group is bit
//                c % 64 of word c / 64;
//   weights      [G, Og_pad, Ks] uint64: one row per output channel holding its (kh, kw, Wg)
//                words, zero-filled up to Ks = roundup(kh * kw * Wg, 4); Og_pad rounds O / G
//                up to 8 with zero rows.
// A call (1) sign-packs the activations straight from NCHW floats, (2) runs tasks of (group,
// block of output channels, block of output positions), each gathering the receptive fields
// of its positions into thread-local scratch (a small im2col of packed words) and running a
// popcount "GEMM" of those rows against the weight rows. Kernels: AVX-512 VPOPCNTDQ (XOR +
// vpopcntq, lanes = 8 output positions, see panel_tile_avx512); AVX2, either XOR + nibble
// lookup with vpshufb, or, with >= 32 output channels per group, an activation-table kernel
// that needs no XOR (see lut_rows_avx2); portable C++.
// The x86 ones are compiled with function-level target attributes and chosen at run time from
// the CPU's features, so the extension needs no -march flag and runs on any x86-64.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#define ZOO_X86 1
#include <immintrin.h>
#else
#define ZOO_X86 0
#endif

#if ZOO_X86 && (defined(__GNUC__) || defined(__clang__))
#define ZOO_SIMD 1
#define ZOO_TARGET_AVX2 __attribute__((target("avx2,popcnt")))
#define ZOO_TARGET_AVX512 __attribute__((target("avx512f,avx512vpopcntdq,popcnt")))
#else
#define ZOO_SIMD 0
#endif

namespace {

enum Backend : int64_t { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

constexpr int64_t kWordAlign = 4;    // Ks is a multiple of this (one AVX2 vector)
constexpr int64_t kOutAlign = 8;     // Og_pad is a multiple of this (largest NR)
constexpr int64_t kRowBlock = 16;    // output positions per task
constexpr int64_t kChanBlock = 64;   // output channels per task
constexpr int64_t kPixelBlock = 32;  // pixels per packing task
constexpr int64_t kLutMaxBits = 65535;  // AVX2 table kernel: 16-bit sums per output
constexpr int64_t kLutChanBlock = 128;  // AVX2 table kernel: output channels per task
constexpr int kLutMR = 2;               // AVX2 table kernel: rows per micro-tile

// ---------------------------------------------------------------------------------------------
// CPU features

bool cpu_has_avx2() {
#if ZOO_SIMD
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#else
  return false;
#endif
}

bool cpu_has_avx512_vpopcntdq() {
#if ZOO_SIMD
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
#else
  return false;
#endif
}

int64_t best_backend() {
  if (cpu_has_avx512_vpopcntdq()) return kAvx512;
  if (cpu_has_avx2()) return kAvx2;
  return kPortable;
}

// ---------------------------------------------------------------------------------------------
// Popcount tile kernels.
//
// Each computes, for `ntiles` consecutive tiles of MR rows of A (row stride ks words) against
// the same NR rows of B (row stride ks), the popcount of (A_row XOR B_row) over `nwords`
// words, writing pc[t * MR * NR + i * NR + j]. Rows of A and B are zero beyond the real data.

inline int popcount64(uint64_t v) {
#if (defined(__GNUC__) || defined(__clang__)) && (!ZOO_X86 || defined(__POPCNT__))
  return __builtin_popcountll(v);  // one instruction where the target has it (Arm: cnt)
#else
  v = v - ((v >> 1) & 0x5555555555555555ULL);
  v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
  v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return static_cast<int>((v * 0x0101010101010101ULL) >> 56);
#endif
}

template <int MR, int NR>
void tiles_portable(const uint64_t* A, const uint64_t* B, int64_t ks, int64_t nwords,
                    int64_t ntiles, int32_t* pc) {
  for (int64_t t = 0; t < ntiles; ++t) {
    const uint64_t* a = A + t * MR * ks;
    int32_t acc[MR][NR] = {};
    for (int64_t k = 0; k < nwords; ++k) {
      for (int i = 0; i < MR; ++i) {
        const uint64_t av = a[i * ks + k];
        for (int j = 0; j < NR; ++j) acc[i][j] += popcount64(av ^ B[j * ks + k]);
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) pc[t * MR * NR + i * NR + j] = acc[i][j];
  }
}

#if ZOO_SIMD

// AVX2 popcount by nibble lookup with vpshufb (Mula et al.), on pre-split rows: every
// 4-word vector of a row is stored as two vectors holding its low and high nibbles, one per
// byte (split_nibbles_avx2). The nibbles of a XOR b are the XOR of the nibbles, so a pair of
// vectors costs 2 xor + 2 vpshufb + 2 add. Byte counters grow by at most 8 a step and are
// widened every 31 steps; four of them are reduced at once into 4 int32 with one vpsadbw
// each and a few shuffles.
ZOO_TARGET_AVX2 void split_nibbles_avx2(const uint64_t* src, int64_t nvec, uint64_t* dst) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  for (int64_t k = 0; k < nvec; ++k) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 4 * k));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8 * k), _mm256_and_si256(v, low4));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8 * k + 4),
                        _mm256_and_si256(_mm256_srli_epi16(v, 4), low4));
  }
}

// Sums of the bytes of a, b, c, d (each < 2^16) as 4 int32.
ZOO_TARGET_AVX2 inline __m128i sum4_epu8_avx2(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i ab = _mm256_or_si256(_mm256_sad_epu8(a, zero),
                                     _mm256_slli_epi64(_mm256_sad_epu8(b, zero), 32));
  const __m256i cd = _mm256_or_si256(_mm256_sad_epu8(c, zero),
                                     _mm256_slli_epi64(_mm256_sad_epu8(d, zero), 32));
  const __m256i s =
      _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
  return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

// Rows of A and B here have stride `ks` in words of split data (2 per packed word); nwords
// counts packed words (a multiple of 4). NR is a multiple of 4.
template <int MR, int NR>
ZOO_TARGET_AVX2 void tiles_avx2(const uint64_t* A, const uint64_t* B, int64_t ks,
                                int64_t nwords, int64_t ntiles, int32_t* pc) {
  static_assert(NR % 4 == 0, "NR must be a multiple of 4");
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i zero = _mm256_setzero_si256();
  const int64_t nvec = nwords / 4;
  for (int64_t t = 0; t < ntiles; ++t) {
    const uint64_t* a = A + t * MR * ks;
    __m128i tot[MR][NR / 4];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int q = 0; q < NR / 4; ++q) tot[i][q] = _mm_setzero_si128();
    for (int64_t k0 = 0; k0 < nvec; k0 += 31) {
      const int64_t k1 = std::min(nvec, k0 + 31);
      __m256i acc[MR][NR];
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) acc[i][j] = zero;
#pragma GCC unroll 2
      for (int64_t k = k0; k < k1; ++k) {
        __m256i alo[MR], ahi[MR];
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
          alo[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i * ks + 8 * k));
          ahi[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i * ks + 8 * k + 4));
        }
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) {
          const __m256i blo =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + j * ks + 8 * k));
          const __m256i bhi =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + j * ks + 8 * k + 4));
#pragma GCC unroll 8
          for (int i = 0; i < MR; ++i) {
            const __m256i c =
                _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(alo[i], blo)),
                                _mm256_shuffle_epi8(lut, _mm256_xor_si256(ahi[i], bhi)));
            acc[i][j] = _mm256_add_epi8(acc[i][j], c);
          }
        }
      }
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int q = 0; q < NR / 4; ++q)
          tot[i][q] = _mm_add_epi32(
              tot[i][q], sum4_epu8_avx2(acc[i][4 * q], acc[i][4 * q + 1], acc[i][4 * q + 2],
                                        acc[i][4 * q + 3]));
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int q = 0; q < NR / 4; ++q)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(pc + (t * MR + i) * NR + 4 * q), tot[i][q]);
  }
}

// AVX2 "activation tables" kernel, for layers with >= 32 output channels per group. Every
// 4-bit piece (segment) of an activation row has a 16-entry table T_a[w] = popcount(a ^ w);
// one vpshufb looks up the segment's weight nibbles of 32 output channels at once (weights
// transposed to [segment][32 channels], one nibble per byte), so 128 binary products cost
// one vpshufb and one add, and no XOR. Rows are in nibble-split form (split_nibbles_avx2:
// one segment per byte). Byte counters reach at most 4 * 63 and are widened to 16 bits every
// 63 segments, so a layer may have up to 65535 products per output.
struct NibbleTables {
  alignas(32) uint8_t t[16][32];
  NibbleTables() {
    for (int a = 0; a < 16; ++a)
      for (int b = 0; b < 32; ++b) t[a][b] = static_cast<uint8_t>(popcount64(a ^ (b & 15)));
  }
};
const NibbleTables kNibbleTables;
constexpr int64_t kLutSegments = 63;  // segments between two widenings

// 32 rows of 32 bytes (row stride istride) -> out[c][r] = in[r][c] (row stride ostride).
ZOO_TARGET_AVX2 void transpose32x32_avx2(const uint8_t* in, int64_t istride, uint8_t* out,
                                         int64_t ostride) {
  __m256i x[32], t[16];
  for (int r = 0; r < 32; ++r)
    x[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + r * istride));
  for (int h = 0; h < 2; ++h) {  // 16x16 transposes inside each 128-bit lane
    __m256i* a = x + 16 * h;
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm256_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    }
    for (int q = 0; q < 4; ++q)
      for (int i = 0; i < 2; ++i) {
        a[4 * q + 2 * i] = _mm256_unpacklo_epi16(t[4 * q + i], t[4 * q + i + 2]);
        a[4 * q + 2 * i + 1] = _mm256_unpackhi_epi16(t[4 * q + i], t[4 * q + i + 2]);
      }
    for (int q = 0; q < 2; ++q)
      for (int i = 0; i < 4; ++i) {
        t[8 * q + 2 * i] = _mm256_unpacklo_epi32(a[8 * q + i], a[8 * q + i + 4]);
        t[8 * q + 2 * i + 1] = _mm256_unpackhi_epi32(a[8 * q + i], a[8 * q + i + 4]);
      }
    for (int i = 0; i < 8; ++i) {
      a[2 * i] = _mm256_unpacklo_epi64(t[i], t[i + 8]);
      a[2 * i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 8]);
    }
  }
  for (int j = 0; j < 16; ++j) {  // lane 0: columns 0-15, lane 1: columns 16-31
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * ostride),
                        _mm256_permute2x128_si256(x[j], x[16 + j], 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (16 + j) * ostride),
                        _mm256_permute2x128_si256(x[j], x[16 + j], 0x31));
  }
}

// anib: nrows (a multiple of MR) rows of S segment bytes; wt: NR blocks [S][32] of weight
// nibbles; acc16 (caller-zeroed): [nrows][NR][2] vectors of 16-bit sums, channels of a block
// in the order (0-7, 16-23) then (8-15, 24-31).
template <int MR, int NR>
ZOO_TARGET_AVX2 void lut_rows_avx2(const uint8_t* anib, int64_t S, int64_t nrows,
                                   const uint8_t* wt, __m256i* acc16) {
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t s0 = 0; s0 < S; s0 += kLutSegments) {
    const int64_t s1 = std::min(S, s0 + kLutSegments);
    for (int64_t r = 0; r < nrows; r += MR) {
      const uint8_t* a = anib + r * S;
      __m256i acc[MR][NR];
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) acc[i][j] = zero;
#pragma GCC unroll 2
      for (int64_t k = s0; k < s1; ++k) {
        __m256i tab[MR];
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i)
          tab[i] = _mm256_load_si256(
              reinterpret_cast<const __m256i*>(kNibbleTables.t[a[i * S + k]]));
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) {
          const __m256i w =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + (j * S + k) * 32));
#pragma GCC unroll 8
          for (int i = 0; i < MR; ++i)
            acc[i][j] = _mm256_add_epi8(acc[i][j], _mm256_shuffle_epi8(tab[i], w));
        }
      }
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) {
          __m256i* d = acc16 + ((r + i) * NR + j) * 2;
          _mm256_storeu_si256(d, _mm256_add_epi16(_mm256_loadu_si256(d),
                                                  _mm256_unpacklo_epi8(acc[i][j], zero)));
          _mm256_storeu_si256(d + 1, _mm256_add_epi16(_mm256_loadu_si256(d + 1),
                                                      _mm256_unpackhi_epi8(acc[i][j], zero)));
        }
    }
  }
}

// 16-bit sums from lut_rows_avx2 -> `bits - 2 * sum` as int32 res[row][nvec * 32], channels
// back in natural order.
ZOO_TARGET_AVX2 void lut_results_avx2(const __m256i* acc16, int64_t nrows, int64_t nvec,
                                      int32_t bits, int32_t* res) {
  const __m256i vbits = _mm256_set1_epi32(bits);
  for (int64_t i = 0; i < nrows; ++i) {
    for (int64_t v = 0; v < nvec; ++v) {
      const __m256i lo = _mm256_loadu_si256(acc16 + (i * nvec + v) * 2);      // 0-7 | 16-23
      const __m256i hi = _mm256_loadu_si256(acc16 + (i * nvec + v) * 2 + 1);  // 8-15 | 24-31
      const __m256i c0 = _mm256_permute2x128_si256(lo, hi, 0x20);  // channels 0-15
      const __m256i c1 = _mm256_permute2x128_si256(lo, hi, 0x31);  // channels 16-31
      const __m128i parts[4] = {_mm256_castsi256_si128(c0), _mm256_extracti128_si256(c0, 1),
                                _mm256_castsi256_si128(c1), _mm256_extracti128_si256(c1, 1)};
      int32_t* dst = res + (i * nvec + v) * 32;
      for (int q = 0; q < 4; ++q) {
        const __m256i sum = _mm256_cvtepu16_epi32(parts[q]);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8 * q),
                            _mm256_sub_epi32(vbits, _mm256_slli_epi32(sum, 1)));
      }
    }
  }
}

using LutFn = void (*)(const uint8_t*, int64_t, int64_t, const uint8_t*, __m256i*);
const LutFn kLutFns[4] = {&lut_rows_avx2<kLutMR, 1>, &lut_rows_avx2<kLutMR, 2>,
                          &lut_rows_avx2<kLutMR, 3>, &lut_rows_avx2<kLutMR, 4>};

// AVX-512 panel kernel: the lanes of a vector are 8 output positions, not 8 words of one row.
// The gathered rows of a task are stored as panels [K][8] (word k of 8 consecutive positions
// side by side, gather_panels), and each weight word is broadcast against them, so a step is
// exactly one XOR, one VPOPCNTQ and one add per 8 products of 64 bits: no masked tail for
// rows whose length is not a multiple of 8 words and no horizontal sums at the end. MV panels
// (8 * MV positions) by NR output channels per micro-tile; popcounts out as int32
// pc[j * 8 * MV + position].
// The micro-tile's popcounts: acc[m][j] lane i = popcount of position m * 8 + i against
// output channel j, summed over the K words.
template <int MV, int NR>
ZOO_TARGET_AVX512 inline void panel_popcounts(const uint64_t* A, const uint64_t* B, int64_t ks,
                                              int64_t K, __m512i (&acc)[MV][NR]) {
#pragma GCC unroll 8
  for (int m = 0; m < MV; ++m)
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) acc[m][j] = _mm512_setzero_si512();
  for (int64_t k = 0; k < K; ++k) {
    __m512i av[MV];
#pragma GCC unroll 8
    for (int m = 0; m < MV; ++m) av[m] = _mm512_loadu_si512(A + (m * K + k) * 8);
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) {
      const __m512i bv = _mm512_set1_epi64(static_cast<long long>(B[j * ks + k]));
#pragma GCC unroll 8
      for (int m = 0; m < MV; ++m)
        acc[m][j] = _mm512_add_epi64(acc[m][j], _mm512_popcnt_epi64(_mm512_xor_si512(av[m], bv)));
    }
  }
}

template <int MV, int NR>
ZOO_TARGET_AVX512 void panel_tile_avx512(const uint64_t* A, const uint64_t* B, int64_t ks,
                                         int64_t K, int32_t* pc) {
  __m512i acc[MV][NR];
  panel_popcounts<MV, NR>(A, B, ks, K, acc);
#pragma GCC unroll 16
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 8
    for (int m = 0; m < MV; ++m)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pc + (j * MV + m) * 8),
                          _mm512_cvtepi64_epi32(acc[m][j]));
}

// 8 vectors of 8 int32 (v[j][i]: channel j, position i) -> v[i][j], in place.
ZOO_TARGET_AVX512 inline void transpose8x8_epi32(__m256i (&v)[8]) {
  __m256i t[8], u[8];
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm256_unpacklo_epi32(v[k], v[k + 1]);
    t[k + 1] = _mm256_unpackhi_epi32(v[k], v[k + 1]);
  }
  for (int k = 0; k < 8; k += 4) {
    u[k] = _mm256_unpacklo_epi64(t[k], t[k + 2]);      // positions 0, 4
    u[k + 1] = _mm256_unpackhi_epi64(t[k], t[k + 2]);  // 1, 5
    u[k + 2] = _mm256_unpacklo_epi64(t[k + 1], t[k + 3]);  // 2, 6
    u[k + 3] = _mm256_unpackhi_epi64(t[k + 1], t[k + 3]);  // 3, 7
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
    v[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
  }
}

// Where a channels_last float32 tile goes: `dot * scale + bias` of output channels
// [oc, oc + nr) at positions r0 .. r0 + nrows - 1, i.e. out[(r0 + i) * O + oc + j].
struct NhwcTile {
  float* out;  // at (r0, oc)
  int64_t O;
  const float* scale;  // at oc
  const float* bias;   // at oc, or null
  int32_t bits;
  int nrows;
  int nr;
};

// panel_tile_avx512 for a channels_last output: the accumulators (lanes = positions) are
// transposed 8x8 in registers so that each position's channels are one contiguous store.
template <int MV>
ZOO_TARGET_AVX512 void panel_tile_nhwc_avx512(const uint64_t* A, const uint64_t* B, int64_t ks,
                                              int64_t K, const NhwcTile& t) {
  constexpr int NR = 8;
  __m512i acc[MV][NR];
  panel_popcounts<MV, NR>(A, B, ks, K, acc);
  // 512-bit ops on the low 8 lanes (masked): no AVX-512VL needed.
  const __mmask16 cm = static_cast<__mmask16>((1u << t.nr) - 1u);
  const __m512 scale = _mm512_maskz_loadu_ps(cm, t.scale);
  const __m512 bias = t.bias ? _mm512_maskz_loadu_ps(cm, t.bias) : _mm512_setzero_ps();
  const __m256i bits = _mm256_set1_epi32(t.bits);
  for (int m = 0; m < MV; ++m) {
    __m256i v[8];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) v[j] = _mm512_cvtepi64_epi32(acc[m][j]);
    transpose8x8_epi32(v);
    for (int i = 0; i < 8 && m * 8 + i < t.nrows; ++i) {
      const __m256i d = _mm256_sub_epi32(bits, _mm256_slli_epi32(v[i], 1));
      const __m512 dots = _mm512_cvtepi32_ps(_mm512_zextsi256_si512(d));
      _mm512_mask_storeu_ps(t.out + (m * 8 + i) * t.O, cm,
                            _mm512_add_ps(_mm512_mul_ps(dots, scale), bias));
    }
  }
}

constexpr int kPanelMV = 2;  // panels (of 8 positions) per micro-tile: kRowBlock positions
constexpr int kPanelNR = 8;  // output channels per micro-tile (Og_pad is a multiple of 8)
static_assert(kPanelMV * 8 == kRowBlock, "a task's rows are one micro-tile of panels");

#endif  // ZOO_SIMD

using TileFn = void (*)(const uint64_t*, const uint64_t*, int64_t, int64_t, int64_t, int32_t*);

using SplitFn = void (*)(const uint64_t*, int64_t, uint64_t*);

struct Kernel {
  TileFn fn;
  int MR;
  int NR;
  bool pad_words;  // true: run over all Ks words (multiple of 4), false: the real K words
  SplitFn split;   // when set, rows are rewritten by it (2 words per word) before the kernel
  bool lut;        // the AVX2 activation-table kernel may be used (enough output channels)
};

Kernel kernel_for(int64_t backend) {
  switch (backend) {
#if ZOO_SIMD
    case kAvx2:
      return {&tiles_avx2<2, 4>, 2, 4, true, &split_nibbles_avx2, true};
#endif
    default:
      return {&tiles_portable<2, 4>, 2, 4, false, nullptr, false};
  }
}

// ---------------------------------------------------------------------------------------------
// Geometry and scratch

struct Geom {
  int64_t N, C, H, W, G, Cg, Wg;  // input
  int64_t O, Og, Og_pad;           // output channels
  int64_t kh, kw, sh, sw, pt, pl, dh, dw;
  int64_t Ho, Wo, P, R;            // output positions per image, rows = N * P
  int64_t K, Ks;                   // words per row (real, padded)
  int64_t bits;                    // Cg * kh * kw, real binary products per output
};

// Grow-only buffer, one per thread: reused across calls so the hot loops never allocate.
uint64_t* scratch(std::vector<uint64_t>& buf, size_t words) {
  if (buf.size() < words) buf.resize(words);
  return buf.data();
}

thread_local std::vector<uint64_t> tl_packed;  // packed activations of the calling thread
thread_local std::vector<uint64_t> tl_cols;    // im2col rows of a worker thread
thread_local std::vector<uint64_t> tl_planar;  // packed activations as planes (AVX-512)
thread_local std::vector<int32_t> tl_counts;   // popcounts of one tile row of a worker

// ---------------------------------------------------------------------------------------------
// Fused sign + bit packing: NCHW floats -> [N, H*W, G, Wg] words.

template <typename T>
inline void pack_pixels(const T* x, const Geom& g, uint64_t* out, int64_t n, int64_t p0,
                        int64_t np) {
  const int64_t HW = g.H * g.W;
  uint64_t tmp[kPixelBlock];
  for (int64_t grp = 0; grp < g.G; ++grp) {
    for (int64_t j = 0; j < g.Wg; ++j) {
      const int64_t c0 = grp * g.Cg + j * 64;
      const int64_t nc = std::min<int64_t>(64, g.Cg - j * 64);
      for (int64_t q = 0; q < np; ++q) tmp[q] = 0;
      for (int64_t b = 0; b < nc; ++b) {
        const T* row = x + (n * g.C + c0 + b) * HW + p0;
        for (int64_t q = 0; q < np; ++q)
          tmp[q] |= static_cast<uint64_t>(!(row[q] >= T(0))) << b;
      }
      uint64_t* dst = out + ((n * HW + p0) * g.G + grp) * g.Wg + j;
      for (int64_t q = 0; q < np; ++q) dst[q * g.G * g.Wg] = tmp[q];
    }
  }
}

// One image row of a linear layer (H = W = 1): channels are contiguous.
template <typename T>
inline void pack_vector(const T* x, const Geom& g, uint64_t* out, int64_t n) {
  for (int64_t grp = 0; grp < g.G; ++grp) {
    for (int64_t j = 0; j < g.Wg; ++j) {
      const T* src = x + n * g.C + grp * g.Cg + j * 64;
      const int64_t nc = std::min<int64_t>(64, g.Cg - j * 64);
      uint64_t word = 0;
      for (int64_t b = 0; b < nc; ++b) word |= static_cast<uint64_t>(!(src[b] >= T(0))) << b;
      out[(n * g.G + grp) * g.Wg + j] = word;
    }
  }
}

template <typename T>
void pack_range(const T* x, const Geom& g, uint64_t* out, int64_t begin, int64_t end) {
  const int64_t HW = g.H * g.W;
  if (HW == 1) {
    for (int64_t n = begin; n < end; ++n) pack_vector(x, g, out, n);
    return;
  }
  const int64_t nblk = (HW + kPixelBlock - 1) / kPixelBlock;
  for (int64_t it = begin; it < end; ++it) {
    const int64_t n = it / nblk;
    const int64_t p0 = (it % nblk) * kPixelBlock;
    pack_pixels(x, g, out, n, p0, std::min(kPixelBlock, HW - p0));
  }
}

#if ZOO_SIMD
// AVX2 packing of float32 NCHW, 8 pixels at a time: one compare gives the sign of 8 pixels
// of a channel, and-ed with that channel's bit and or-ed into two 32-bit halves (channels
// 0-31 and 32-63) that are interleaved into 64-bit words at the end.
ZOO_TARGET_AVX2 void pack_pixels_avx2(const float* x, const Geom& g, uint64_t* out, int64_t n,
                                      int64_t p0, int64_t np) {
  const int64_t HW = g.H * g.W;
  const int64_t stride_px = g.G * g.Wg;
  const __m256 zero = _mm256_setzero_ps();
  const int64_t nvec = np / 8 * 8;
  alignas(32) uint64_t words[8];
  for (int64_t grp = 0; grp < g.G; ++grp) {
    for (int64_t j = 0; j < g.Wg; ++j) {
      const int64_t c0 = grp * g.Cg + j * 64;
      const int64_t nc = std::min<int64_t>(64, g.Cg - j * 64);
      const float* base = x + (n * g.C + c0) * HW + p0;
      uint64_t* dst = out + ((n * HW + p0) * g.G + grp) * g.Wg + j;
      for (int64_t q = 0; q < nvec; q += 8) {
        __m256i half[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int h = 0; h < 2; ++h) {
          const int64_t b_end = std::min<int64_t>(nc, 32 * (h + 1));
          __m256i bit = _mm256_set1_epi32(1);
          __m256i acc = _mm256_setzero_si256();
          for (int64_t b = 32 * h; b < b_end; ++b) {
            const __m256 v = _mm256_loadu_ps(base + b * HW + q);
            const __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(v, zero, _CMP_NGE_UQ));
            acc = _mm256_or_si256(acc, _mm256_and_si256(neg, bit));
            bit = _mm256_slli_epi32(bit, 1);
          }
          half[h] = acc;
        }
        // lanes: unpacklo -> pixels 0,1 | 4,5 ; unpackhi -> pixels 2,3 | 6,7
        const __m256i lo = _mm256_unpacklo_epi32(half[0], half[1]);
        const __m256i hi = _mm256_unpackhi_epi32(half[0], half[1]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(words),
                           _mm256_permute2x128_si256(lo, hi, 0x20));  // pixels 0,1,2,3
        _mm256_store_si256(reinterpret_cast<__m256i*>(words + 4),
                           _mm256_permute2x128_si256(lo, hi, 0x31));  // pixels 4,5,6,7
        for (int e = 0; e < 8; ++e) dst[(q + e) * stride_px] = words[e];
      }
      for (int64_t q = nvec; q < np; ++q) {
        uint64_t word = 0;
        for (int64_t b = 0; b < nc; ++b)
          word |= static_cast<uint64_t>(!(base[b * HW + q] >= 0.f)) << b;
        dst[q * stride_px] = word;
      }
    }
  }
}

template <typename T>
ZOO_TARGET_AVX2 void pack_range_avx2(const T* x, const Geom& g, uint64_t* out, int64_t begin,
                                     int64_t end) {
  const int64_t HW = g.H * g.W;
  if (!std::is_same<T, float>::value || HW < 8) {
    pack_range(x, g, out, begin, end);
    return;
  }
  const int64_t nblk = (HW + kPixelBlock - 1) / kPixelBlock;
  for (int64_t it = begin; it < end; ++it) {
    const int64_t n = it / nblk;
    const int64_t p0 = (it % nblk) * kPixelBlock;
    pack_pixels_avx2(reinterpret_cast<const float*>(x), g, out, n, p0,
                     std::min(kPixelBlock, HW - p0));
  }
}
#endif

int64_t pack_items(const Geom& g) {
  const int64_t HW = g.H * g.W;
  return HW == 1 ? g.N : g.N * ((HW + kPixelBlock - 1) / kPixelBlock);
}

template <typename T>
void pack_items_range(const T* x, const Geom& g, uint64_t* out,
                      [[maybe_unused]] int64_t backend, int64_t begin, int64_t end) {
#if ZOO_SIMD
  if (backend != kPortable) {
    pack_range_avx2(x, g, out, begin, end);
    return;
  }
#endif
  pack_range(x, g, out, begin, end);
}

// ---------------------------------------------------------------------------------------------
// im2col of a block of rows (output positions) of one group, into `cols` [rows_pad, Ks].
// Positions outside the input are zero words (sign(0) = +1), as are rows past the end.

void gather_rows(const uint64_t* packed, const Geom& g, int64_t grp, int64_t r0, int64_t nrows,
                 int64_t rows_pad, uint64_t* cols) {
  // Locals, not g.*: the uint64_t stores below may alias int64_t fields for the compiler.
  const int64_t H = g.H, W = g.W, Wg = g.Wg, Ks = g.Ks, K = g.K, kh = g.kh, kw = g.kw;
  const int64_t sh = g.sh, sw = g.sw, pt = g.pt, pl = g.pl, dh = g.dh, dw = g.dw;
  const int64_t stride_px = g.G * Wg;
  const size_t tap_bytes = sizeof(uint64_t) * Wg;
  int64_t n = r0 / g.P;  // (n, ho, wo) of row r0, then stepped row by row
  int64_t ho = (r0 - n * g.P) / g.Wo;
  int64_t wo = r0 - n * g.P - ho * g.Wo;
  for (int64_t i = 0; i < rows_pad; ++i) {
    uint64_t* dst = cols + i * Ks;
    if (i >= nrows) {
      std::memset(dst, 0, sizeof(uint64_t) * Ks);
      continue;
    }
    if (i > 0 && ++wo == g.Wo) {
      wo = 0;
      if (++ho == g.Ho) {
        ho = 0;
        ++n;
      }
    }
    const uint64_t* img = packed + n * H * W * stride_px + grp * Wg;
    for (int64_t u = 0; u < kh; ++u) {
      const int64_t hi = ho * sh - pt + u * dh;
      const bool row_in = hi >= 0 && hi < H;
      for (int64_t v = 0; v < kw; ++v, dst += Wg) {
        const int64_t wi = wo * sw - pl + v * dw;
        if (row_in && wi >= 0 && wi < W)
          std::memcpy(dst, img + (hi * W + wi) * stride_px, tap_bytes);
        else
          std::memset(dst, 0, tap_bytes);
      }
    }
    std::memset(cols + i * Ks + K, 0, sizeof(uint64_t) * (Ks - K));
  }
}

#if ZOO_SIMD
// Packed activations [N, H*W, S] (S = G * Wg words per pixel) -> planes [N, S, H*W], so that
// word q of consecutive pixels is contiguous and a panel reads it with one masked load.
void to_planar(const uint64_t* packed, const Geom& g, uint64_t* planar) {
  const int64_t HW = g.H * g.W, S = g.G * g.Wg;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t px = 0; px < HW; ++px)
      for (int64_t q = 0; q < S; ++q)
        planar[(n * S + q) * HW + px] = packed[(n * HW + px) * S + q];
}

// A run of a panel's lanes [L0, L1) on one output row: its image plane and input origin.
struct PanelRun {
  int64_t L0, L1, plane, hi, wi;
};

// Lanes [0, nlanes) of the panel starting at output row r split into runs on one output row.
int panel_runs(const Geom& g, int64_t grp, int64_t r, int64_t nlanes, PanelRun* runs) {
  int64_t n = r / g.P, ho = (r - n * g.P) / g.Wo, wo = r - n * g.P - ho * g.Wo;
  int count = 0;
  for (int64_t L = 0; L < nlanes;) {
    const int64_t len = std::min(nlanes - L, g.Wo - wo);
    runs[count++] = {L, L + len, (n * g.G * g.Wg + grp * g.Wg) * g.H * g.W, ho * g.sh - g.pt,
                     wo * g.sw - g.pl};
    L += len;
    wo += len;
    if (wo == g.Wo) {
      wo = 0;
      if (++ho == g.Ho) {
        ho = 0;
        ++n;
      }
    }
  }
  return count;
}

// One panel, stride 1 along the width: each run of lanes reads word q of a tap with one
// masked load of consecutive pixels; lanes in the padding (or past the last row) stay zero.
ZOO_TARGET_AVX512 void panel_stride1(const uint64_t* planar, const Geom& g,
                                     const PanelRun* runs, int nruns, uint64_t* dst) {
  const int64_t HW = g.H * g.W;
  const long long* src = reinterpret_cast<const long long*>(planar);
  __mmask8 mask[8];
  int64_t base[8];
  for (int64_t u = 0; u < g.kh; ++u) {
    for (int64_t v = 0; v < g.kw; ++v) {
      for (int s = 0; s < nruns; ++s) {
        const PanelRun& run = runs[s];
        const int64_t hi = run.hi + u * g.dh, wi = run.wi + v * g.dw;  // at lane L0
        const int64_t lo = std::max(run.L0, run.L0 - wi);
        const int64_t up = std::min(run.L1, run.L0 + g.W - wi);
        mask[s] = (hi < 0 || hi >= g.H || lo >= up)
                      ? 0
                      : static_cast<__mmask8>(((1u << up) - 1u) ^ ((1u << lo) - 1u));
        base[s] = run.plane + hi * g.W + wi - run.L0;  // the address lane 0 would read
      }
      for (int64_t q = 0; q < g.Wg; ++q, dst += 8) {
        __m512i val = _mm512_setzero_si512();
        for (int s = 0; s < nruns; ++s)
          if (mask[s]) val = _mm512_mask_loadu_epi64(val, mask[s], src + base[s] + q * HW);
        _mm512_storeu_si512(dst, val);
      }
    }
  }
}

// One panel, stride 2 along the width: lane L of a run reads pixel wi + 2 (L - L0), so word q
// of 8 lanes comes from two masked loads of 8 consecutive words and one permute that keeps the
// even ones (gathers are slow on many x86 cores).
ZOO_TARGET_AVX512 void panel_stride2(const uint64_t* planar, const Geom& g,
                                     const PanelRun* runs, int nruns, uint64_t* dst) {
  const int64_t HW = g.H * g.W;
  const long long* src = reinterpret_cast<const long long*>(planar);
  const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  __mmask8 mask[8], mlo[8], mhi[8];
  int64_t base[8];
  for (int64_t u = 0; u < g.kh; ++u) {
    for (int64_t v = 0; v < g.kw; ++v) {
      for (int s = 0; s < nruns; ++s) {
        const PanelRun& run = runs[s];
        const int64_t hi = run.hi + u * g.dh, wi = run.wi + v * g.dw;  // at lane L0
        // lanes L of the run with 0 <= wi + 2 (L - L0) < W
        const int64_t lo = std::max(run.L0, run.L0 + (1 - wi) / 2 * (wi < 0));
        const int64_t up = wi >= g.W ? run.L0 : std::min(run.L1, run.L0 + (g.W - wi + 1) / 2);
        mask[s] = mlo[s] = mhi[s] = 0;
        if (hi >= 0 && hi < g.H)
          for (int64_t L = lo; L < up; ++L) {
            mask[s] |= static_cast<__mmask8>(1u << L);
            if (L < 4)
              mlo[s] |= static_cast<__mmask8>(1u << (2 * L));
            else
              mhi[s] |= static_cast<__mmask8>(1u << (2 * L - 8));
          }
        base[s] = run.plane + hi * g.W + wi - 2 * run.L0;  // the address lane 0 would read
      }
      for (int64_t q = 0; q < g.Wg; ++q, dst += 8) {
        __m512i val = _mm512_setzero_si512();
        for (int s = 0; s < nruns; ++s) {
          if (!mask[s]) continue;
          const long long* at = src + base[s] + q * HW;
          const __m512i a = _mm512_maskz_loadu_epi64(mlo[s], at);
          const __m512i b = _mm512_maskz_loadu_epi64(mhi[s], at + 8);
          val = _mm512_mask_mov_epi64(val, mask[s], _mm512_permutex2var_epi64(a, even, b));
        }
        _mm512_storeu_si512(dst, val);
      }
    }
  }
}

// One panel, any stride: one masked gather per tap and word.
ZOO_TARGET_AVX512 void panel_strided(const uint64_t* planar, const Geom& g,
                                     const PanelRun* runs, int nruns, uint64_t* dst) {
  const int64_t HW = g.H * g.W;
  alignas(64) int64_t hi0[8], wi0[8], off0[8];
  for (int64_t lane = 0; lane < 8; ++lane) {
    hi0[lane] = -(int64_t(1) << 40);  // lanes without a row: every tap out of bounds
    wi0[lane] = off0[lane] = 0;
  }
  for (int s = 0; s < nruns; ++s)
    for (int64_t L = runs[s].L0; L < runs[s].L1; ++L) {
      hi0[L] = runs[s].hi;
      wi0[L] = runs[s].wi + (L - runs[s].L0) * g.sw;
      off0[L] = runs[s].plane + hi0[L] * g.W + wi0[L];
    }
  const __m512i zero = _mm512_setzero_si512();
  const __m512i vh0 = _mm512_load_si512(hi0), vw0 = _mm512_load_si512(wi0);
  const __m512i voff0 = _mm512_load_si512(off0);
  const __m512i vH = _mm512_set1_epi64(g.H), vW = _mm512_set1_epi64(g.W);
  const long long* src = reinterpret_cast<const long long*>(planar);
  for (int64_t u = 0; u < g.kh; ++u) {
    const __m512i vh = _mm512_add_epi64(vh0, _mm512_set1_epi64(u * g.dh));
    const __mmask8 row_in = _mm512_cmpge_epi64_mask(vh, zero) & _mm512_cmplt_epi64_mask(vh, vH);
    for (int64_t v = 0; v < g.kw; ++v) {
      const __m512i vw = _mm512_add_epi64(vw0, _mm512_set1_epi64(v * g.dw));
      const __mmask8 in =
          row_in & _mm512_cmpge_epi64_mask(vw, zero) & _mm512_cmplt_epi64_mask(vw, vW);
      __m512i idx = _mm512_add_epi64(voff0, _mm512_set1_epi64(u * g.dh * g.W + v * g.dw));
      for (int64_t q = 0; q < g.Wg; ++q, dst += 8) {
        _mm512_storeu_si512(dst, _mm512_mask_i64gather_epi64(zero, in, idx, src, 8));
        idx = _mm512_add_epi64(idx, _mm512_set1_epi64(HW));
      }
    }
  }
}

// im2col of up to kRowBlock rows of one group straight into kRowBlock / 8 panels [K][8]
// (panel_tile_avx512's layout): word k of row i lands at cols[(i / 8) * K * 8 + k * 8 + i % 8].
void gather_panels(const uint64_t* planar, const Geom& g, int64_t grp, int64_t r0,
                   int64_t nrows, uint64_t* cols) {
  for (int64_t p = 0; p * 8 < nrows; ++p) {  // a block of <= 8 rows uses one panel
    uint64_t* dst = cols + p * g.K * 8;
    const int64_t nlanes = std::min<int64_t>(8, nrows - p * 8);
    PanelRun runs[8];
    const int nruns = panel_runs(g, grp, r0 + p * 8, nlanes, runs);
    if (g.sw == 1)
      panel_stride1(planar, g, runs, nruns, dst);
    else if (g.sw == 2)
      panel_stride2(planar, g, runs, nruns, dst);
    else
      panel_strided(planar, g, runs, nruns, dst);
  }
}
#endif

// ---------------------------------------------------------------------------------------------
// The whole convolution.

struct Profile {
  double pack = 0, gather = 0, popcount = 0, phase2 = 0;  // seconds
  bool table_kernel = false;  // the AVX2 activation-table kernel ran
};

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr int64_t kSerialWork = 1 << 16;  // elements below which packing stays serial

// Phase 1: sign-pack the activations (small jobs on the calling thread, where a parallel
// region would cost more than it saves).
template <typename T>
void pack_phase(const T* x, const Geom& g, uint64_t* packed, int64_t backend) {
  const int64_t items = g.C > 0 ? pack_items(g) : 0;
  const int64_t grain = g.N * g.C * g.H * g.W < kSerialWork ? items + 1 : 1;
  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) {
    pack_items_range(x, g, packed, backend, begin, end);
  });
}

// Sign-packing of a channels_last input ([N, H, W, C] in memory): the channels of a pixel are
// contiguous, so each 64-bit word is read straight from 64 consecutive floats (AVX-512: four
// compares giving 16 sign bits each), with no NCHW copy first. Same bits as pack_pixels.
template <typename T>
void pack_nhwc_pixels(const T* x, const Geom& g, uint64_t* out, int64_t begin, int64_t end) {
  for (int64_t px = begin; px < end; ++px)
    for (int64_t grp = 0; grp < g.G; ++grp)
      for (int64_t q = 0; q < g.Wg; ++q) {
        const T* src = x + px * g.C + grp * g.Cg + 64 * q;
        const int64_t nbits = std::min<int64_t>(64, g.Cg - 64 * q);
        uint64_t word = 0;
        for (int64_t b = 0; b < nbits; ++b) word |= uint64_t(!(src[b] >= T(0))) << b;
        out[(px * g.G + grp) * g.Wg + q] = word;
      }
}

#if ZOO_SIMD
ZOO_TARGET_AVX512 void pack_nhwc_pixels_avx512(const float* x, const Geom& g, uint64_t* out,
                                               int64_t begin, int64_t end) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t px = begin; px < end; ++px)
    for (int64_t grp = 0; grp < g.G; ++grp)
      for (int64_t q = 0; q < g.Wg; ++q) {
        const float* src = x + px * g.C + grp * g.Cg + 64 * q;
        const int64_t nbits = std::min<int64_t>(64, g.Cg - 64 * q);
        uint64_t word = 0;
        for (int64_t c = 0; c < nbits; c += 16) {
          const int64_t n = std::min<int64_t>(16, nbits - c);
          const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
          const __m512 v = _mm512_maskz_loadu_ps(m, src + c);
          word |= uint64_t(_mm512_mask_cmp_ps_mask(m, v, zero, _CMP_NGE_UQ)) << c;  // NaN: 1
        }
        out[(px * g.G + grp) * g.Wg + q] = word;
      }
}
#endif

template <typename T>
void pack_nhwc_phase(const T* x, const Geom& g, uint64_t* packed, int64_t backend) {
  const int64_t pixels = g.N * g.H * g.W;
  const int64_t grain = pixels * g.C < kSerialWork ? pixels + 1 : 64;
  at::parallel_for(0, pixels, grain, [&](int64_t begin, int64_t end) {
#if ZOO_SIMD
    if constexpr (std::is_same<T, float>::value) {
      if (backend == kAvx512) return pack_nhwc_pixels_avx512(x, g, packed, begin, end);
    }
#endif
    (void)backend;
    pack_nhwc_pixels(x, g, packed, begin, end);
  });
}

// Output offset (n * O * P + position) of each of the rows r0 .. r0 + nrows - 1 (one division,
// then stepped: this runs once per task).
inline void row_offsets(const Geom& g, int64_t r0, int64_t nrows, int64_t* off) {
  int64_t n = r0 / g.P, pos = r0 - n * g.P;
  for (int64_t i = 0; i < nrows; ++i) {
    off[i] = n * g.O * g.P + pos;
    if (++pos == g.P) {
      pos = 0;
      ++n;
    }
  }
}

#if ZOO_SIMD
// Weights of channels [o_begin, o_begin + nvec * 32) of a group, nibble-split and transposed
// to nvec blocks [S][32] for lut_rows_avx2; channels past the packed rows read as zeros.
void lut_weights(const uint64_t* wts, const Geom& g, int64_t grp, int64_t o_begin, int64_t nvec,
                 uint64_t* split, uint8_t* wt) {
  const int64_t S = 16 * g.Ks;  // segment bytes per split row (2 * Ks words)
  const int64_t rows = std::min(nvec * 32, g.Og_pad - o_begin);
  split_nibbles_avx2(wts + (grp * g.Og_pad + o_begin) * g.Ks, rows * g.Ks / 4, split);
  std::memset(split + rows * 2 * g.Ks, 0, sizeof(uint64_t) * (nvec * 32 - rows) * 2 * g.Ks);
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(split);
  for (int64_t v = 0; v < nvec; ++v)
    for (int64_t q = 0; q < S; q += 32)
      transpose32x32_avx2(bytes + v * 32 * S + q, S, wt + (v * S + q) * 32, 32);
}
#endif

#if ZOO_SIMD
// One output channel over n <= 16 consecutive positions of one image, from a tile buffer that
// holds its popcounts every `stride` int32: one gather, `bits - 2 * pc`, one masked store, as
// int32 or as `dot * scale + bias` in float32 (multiply, then add: the scalar path's rounding).
ZOO_TARGET_AVX512 inline __m512i column_dots_avx512(const int32_t* pc, int stride, __mmask16 m,
                                                    int32_t bits) {
  const __m512i idx = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(stride));
  const __m512i v = stride == 1
                        ? _mm512_maskz_loadu_epi32(m, pc)
                        : _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, pc, 4);
  return _mm512_sub_epi32(_mm512_set1_epi32(bits), _mm512_slli_epi32(v, 1));
}

ZOO_TARGET_AVX512 void column_int_avx512(const int32_t* pc, int stride, int n, int32_t bits,
                                         int32_t* dst) {
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
  _mm512_mask_storeu_epi32(dst, m, column_dots_avx512(pc, stride, m, bits));
}

ZOO_TARGET_AVX512 void column_f32_avx512(const int32_t* pc, int stride, int n, int32_t bits,
                                         float scale, float bias, float* dst) {
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
  const __m512 dots = _mm512_cvtepi32_ps(column_dots_avx512(pc, stride, m, bits));
  const __m512 v = _mm512_add_ps(_mm512_mul_ps(dots, _mm512_set1_ps(scale)),
                                 _mm512_set1_ps(bias));
  _mm512_mask_storeu_ps(dst, m, v);
}
#endif

// Where phase 2 puts the dot product of output channel `oc` at flat position `off` (row
// offset n * O * P + position): as int32, or as `dot * scale[oc] + bias[oc]` in the input's
// float type, which saves the caller three passes over the output (convert, scale, shift).
// `column` writes one channel of a block of consecutive positions at once where it can
// (AVX-512, float32/int32), and returns false to leave it to the element-wise path.
struct IntWriter {
  int32_t* out;
  int64_t P;
  bool simd;
  void operator()(int64_t oc, int64_t off, int32_t dot) const { out[oc * P + off] = dot; }
  bool column([[maybe_unused]] int64_t oc, [[maybe_unused]] int64_t off0,
              [[maybe_unused]] const int32_t* pc, [[maybe_unused]] int stride,
              [[maybe_unused]] int n, [[maybe_unused]] int32_t bits) const {
#if ZOO_SIMD
    if (simd) {
      column_int_avx512(pc, stride, n, bits, out + oc * P + off0);
      return true;
    }
#endif
    return false;
  }
};

template <typename T>
struct AffineWriter {
  T* out;
  int64_t P;
  const float* scale;
  const float* bias;  // may be null
  bool simd;
  void operator()(int64_t oc, int64_t off, int32_t dot) const {
    const float v = static_cast<float>(dot) * scale[oc] + (bias ? bias[oc] : 0.f);
    out[oc * P + off] = static_cast<T>(v);
  }
  bool column([[maybe_unused]] int64_t oc, [[maybe_unused]] int64_t off0,
              [[maybe_unused]] const int32_t* pc, [[maybe_unused]] int stride,
              [[maybe_unused]] int n, [[maybe_unused]] int32_t bits) const {
#if ZOO_SIMD
    if (simd && std::is_same<T, float>::value) {
      column_f32_avx512(pc, stride, n, bits, scale[oc], bias ? bias[oc] : 0.f,
                        reinterpret_cast<float*>(out) + oc * P + off0);
      return true;
    }
#endif
    return false;
  }
};

template <>
struct AffineWriter<double> {  // float64 models: scale in double, as the float layers do
  double* out;
  int64_t P;
  const float* scale;
  const float* bias;
  bool simd;
  void operator()(int64_t oc, int64_t off, int32_t dot) const {
    out[oc * P + off] = static_cast<double>(dot) * scale[oc] + (bias ? bias[oc] : 0.0);
  }
  bool column(int64_t, int64_t, const int32_t*, int, int, int32_t) const { return false; }
};

// A channels_last float32 output ([N, Ho, Wo, O] in memory). Only the AVX-512 panel phase
// writes it (whole tiles, panel_tile_nhwc_avx512); the element-wise form is for completeness.
struct NhwcWriter {
  float* out;
  int64_t P, O;
  const float* scale;
  const float* bias;  // may be null
  void operator()(int64_t oc, int64_t off, int32_t dot) const {
    const int64_t n = off / (O * P), pos = off - n * O * P;
    out[(n * P + pos) * O + oc] = static_cast<float>(dot) * scale[oc] + (bias ? bias[oc] : 0.f);
  }
  bool column(int64_t, int64_t, const int32_t*, int, int, int32_t) const { return false; }
};

// Phase 2: tasks of (group, block of output channels, block of output positions), each
// gathering its rows into thread-local scratch and running a popcount kernel on them.
// Tasks are ordered so that a thread's consecutive tasks share their weight block, which it
// prepares (nibble split, transposition) once and keeps in its scratch.
template <typename Writer>
void gemm_phase(const uint64_t* packed, const uint64_t* wts, const Geom& g, const Kernel& ker,
                const Writer& write, Profile* prof) {
  const bool use_lut = ker.lut && g.Og >= 32 && g.bits <= kLutMaxBits;
  if (prof) prof->table_kernel = use_lut;
  const int MR = use_lut ? kLutMR : ker.MR;
  const int64_t nwords = ker.pad_words ? g.Ks : g.K;
  const int64_t nrb = (g.R + kRowBlock - 1) / kRowBlock;
  const int64_t ob = use_lut ? kLutChanBlock : std::min(kChanBlock, g.Og_pad);
  const int64_t nob = (g.Og + ob - 1) / ob;
  const int64_t items = g.G * nob * nrb;
  const int64_t stride = (ker.split ? 2 : 1) * g.Ks;  // words per row as the kernel reads it
  const int nthreads = at::get_num_threads();
  std::vector<double> gather_t(prof ? nthreads : 0, 0.0);
  std::vector<double> pop_t(prof ? nthreads : 0, 0.0);

  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    // scratch: gathered rows | their split form | split weight block | transposed weights |
    // 16-bit sums of the table kernel (32-byte aligned) | its int32 results
    const int64_t rows_words = kRowBlock * g.Ks;
    const int64_t w_words = 2 * ob * g.Ks;
    const int64_t acc_words = use_lut ? kRowBlock * (kLutChanBlock / 32) * 2 * 4 : 0;
    const int64_t res_words = use_lut ? kRowBlock * kLutChanBlock / 2 : 0;
    uint64_t* cols = scratch(tl_cols, 3 * rows_words + 2 * w_words + acc_words + 4 + res_words);
    uint64_t* a_split = cols + rows_words;
    uint64_t* w_split = a_split + 2 * rows_words;
    [[maybe_unused]] uint8_t* wt = reinterpret_cast<uint8_t*>(w_split + w_words);
    const uintptr_t acc_raw = reinterpret_cast<uintptr_t>(w_split + 2 * w_words);
    [[maybe_unused]] uint16_t* acc16 =
        reinterpret_cast<uint16_t*>((acc_raw + 31) & ~uintptr_t(31));
    [[maybe_unused]] int32_t* res = reinterpret_cast<int32_t*>(acc16 + 4 * acc_words);
    if (tl_counts.size() < static_cast<size_t>(kRowBlock * kOutAlign))
      tl_counts.resize(kRowBlock * kOutAlign);
    int32_t* pc = tl_counts.data();
    const int tid = prof ? at::get_thread_num() : 0;
    const int32_t bits = static_cast<int32_t>(g.bits);
    int64_t w_block = -1;  // (group, channel block) whose weights are prepared in scratch
    int64_t row_off[kRowBlock];
    for (int64_t it = begin; it < end; ++it) {
      const int64_t grp = it / (nob * nrb);
      const int64_t r0 = (it % nrb) * kRowBlock;
      const int64_t o_begin = ((it / nrb) % nob) * ob;
      const int64_t o_end = std::min(g.Og, o_begin + ob);
      const int64_t nrows = std::min(kRowBlock, g.R - r0);
      const int64_t rows_pad = (nrows + MR - 1) / MR * MR;
      [[maybe_unused]] const int64_t nvec = (o_end - o_begin + 31) / 32;  // LUT vectors
      Clock::time_point t0;
      if (prof) t0 = Clock::now();
      const uint64_t* w_rows = wts + (grp * g.Og_pad + o_begin) * g.Ks;
      if (ker.split && w_block != it / nrb) {
#if ZOO_SIMD
        if (use_lut)
          lut_weights(wts, g, grp, o_begin, nvec, w_split, wt);
        else
#endif
          ker.split(w_rows, (o_end - o_begin + ker.NR - 1) / ker.NR * ker.NR * g.Ks / 4,
                    w_split);
        w_block = it / nrb;
      }
      gather_rows(packed, g, grp, r0, nrows, rows_pad, cols);
      const uint64_t* a_rows = cols;
      if (ker.split) {
        ker.split(cols, rows_pad * g.Ks / 4, a_split);
        a_rows = a_split;
        w_rows = w_split;
      }
      row_offsets(g, r0, nrows, row_off);
      Clock::time_point t1;
      if (prof) {
        t1 = Clock::now();
        gather_t[tid] += std::chrono::duration<double>(t1 - t0).count();
      }
#if ZOO_SIMD
      if (use_lut) {
        std::memset(acc16, 0, sizeof(uint16_t) * 32 * rows_pad * nvec);
        kLutFns[nvec - 1](reinterpret_cast<const uint8_t*>(a_rows), 16 * g.Ks, rows_pad, wt,
                          reinterpret_cast<__m256i*>(acc16));
        lut_results_avx2(reinterpret_cast<const __m256i*>(acc16), nrows, nvec, bits, res);
        const int64_t nch = o_end - o_begin;
        for (int64_t c = 0; c < nch; ++c) {
          const int64_t oc = grp * g.Og + o_begin + c;
          for (int64_t i = 0; i < nrows; ++i) write(oc, row_off[i], res[i * nvec * 32 + c]);
        }
        if (prof) pop_t[tid] += seconds_since(t1);
        continue;
      }
#endif
      const int64_t ntiles = rows_pad / ker.MR;
      // The block's positions are consecutive in the output unless it spans two images.
      const bool one_image = row_off[nrows - 1] - row_off[0] == nrows - 1;
      for (int64_t o = o_begin; o < o_end; o += ker.NR) {
        ker.fn(a_rows, w_rows + (o - o_begin) * stride, stride, nwords, ntiles, pc);
        const int64_t nr = std::min<int64_t>(ker.NR, g.Og - o);
        for (int64_t j = 0; j < nr; ++j) {
          const int64_t oc = grp * g.Og + o + j;
          if (one_image && write.column(oc, row_off[0], pc + j, ker.NR, nrows, bits)) continue;
          for (int64_t i = 0; i < nrows; ++i) write(oc, row_off[i], bits - 2 * pc[i * ker.NR + j]);
        }
      }
      if (prof) pop_t[tid] += seconds_since(t1);
    }
  });
  if (prof) {
    for (double t : gather_t) prof->gather += t;
    for (double t : pop_t) prof->popcount += t;
  }
}

#if ZOO_SIMD
// Channels per task of the panel phase: a whole group's channels when that leaves enough
// tasks for the threads (each task gathers its rows once for all its channels), else halved.
int64_t panel_channel_block(const Geom& g, int64_t nrb, int nthreads) {
  int64_t ob = g.Og_pad;
  while (ob > kPanelNR && g.G * nrb * ((g.Og + ob - 1) / ob) < 4 * nthreads)
    ob = (ob / 2 + kPanelNR - 1) / kPanelNR * kPanelNR;
  return ob;
}

// Phase 2 on AVX-512: tasks of (group, block of output channels, kRowBlock positions), each
// gathering its positions into panels once and running panel_tile_avx512 over its channels.
template <typename Writer>
void gemm_phase_panels(const uint64_t* packed, const uint64_t* wts, const Geom& g,
                       const Writer& write, Profile* prof) {
  const int64_t nrb = (g.R + kRowBlock - 1) / kRowBlock;
  const int nthreads = at::get_num_threads();
  const int64_t ob = panel_channel_block(g, nrb, nthreads);
  const int64_t nob = (g.Og + ob - 1) / ob;
  const int64_t items = g.G * nob * nrb;
  std::vector<double> gather_t(prof ? nthreads : 0, 0.0);
  std::vector<double> pop_t(prof ? nthreads : 0, 0.0);
  Clock::time_point tp;
  if (prof) tp = Clock::now();
  uint64_t* planar = scratch(tl_planar, static_cast<size_t>(g.N * g.H * g.W * g.G * g.Wg));
  to_planar(packed, g, planar);
  if (prof) prof->gather += seconds_since(tp);  // part of the im2col work
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    uint64_t* cols = scratch(tl_cols, kRowBlock * g.K);
    alignas(64) int32_t pc[kPanelNR * kRowBlock];
    int64_t row_off[kRowBlock];
    const int tid = prof ? at::get_thread_num() : 0;
    const int32_t bits = static_cast<int32_t>(g.bits);
    for (int64_t it = begin; it < end; ++it) {
      const int64_t grp = it / (nob * nrb);
      const int64_t o_begin = ((it / nrb) % nob) * ob;
      const int64_t o_end = std::min(g.Og, o_begin + ob);
      const int64_t r0 = (it % nrb) * kRowBlock;
      const int64_t nrows = std::min(kRowBlock, g.R - r0);
      Clock::time_point t0;
      if (prof) t0 = Clock::now();
      gather_panels(planar, g, grp, r0, nrows, cols);
      row_offsets(g, r0, nrows, row_off);
      Clock::time_point t1;
      if (prof) {
        t1 = Clock::now();
        gather_t[tid] += std::chrono::duration<double>(t1 - t0).count();
      }
      const bool one_image = row_off[nrows - 1] - row_off[0] == nrows - 1;
      const int mv = nrows <= 8 ? 1 : kPanelMV;  // a last block of <= 8 rows: one panel
      const uint64_t* w_grp = wts + grp * g.Og_pad * g.Ks;
      for (int64_t o = o_begin; o < o_end; o += kPanelNR) {
        if constexpr (std::is_same<Writer, NhwcWriter>::value) {
          const int64_t oc = grp * g.Og + o;
          const NhwcTile tile{write.out + r0 * g.O + oc, g.O, write.scale + oc,
                              write.bias ? write.bias + oc : nullptr, bits,
                              static_cast<int>(nrows),
                              static_cast<int>(std::min<int64_t>(kPanelNR, g.Og - o))};
          if (mv == 1)
            panel_tile_nhwc_avx512<1>(cols, w_grp + o * g.Ks, g.Ks, g.K, tile);
          else
            panel_tile_nhwc_avx512<kPanelMV>(cols, w_grp + o * g.Ks, g.Ks, g.K, tile);
          continue;
        }
        if (mv == 1)
          panel_tile_avx512<1, kPanelNR>(cols, w_grp + o * g.Ks, g.Ks, g.K, pc);
        else
          panel_tile_avx512<kPanelMV, kPanelNR>(cols, w_grp + o * g.Ks, g.Ks, g.K, pc);
        const int64_t nr = std::min<int64_t>(kPanelNR, g.Og - o);
        for (int64_t j = 0; j < nr; ++j) {
          const int64_t oc = grp * g.Og + o + j;
          const int32_t* col = pc + j * 8 * mv;
          if (one_image && write.column(oc, row_off[0], col, 1, nrows, bits)) continue;
          for (int64_t i = 0; i < nrows; ++i) write(oc, row_off[i], bits - 2 * col[i]);
        }
      }
      if (prof) pop_t[tid] += seconds_since(t1);
    }
  });
  if (prof) {
    for (double t : gather_t) prof->gather += t;
    for (double t : pop_t) prof->popcount += t;
  }
}
#endif

// Phase 2 with the backend's kernel.
template <typename Writer>
void run_phase2(const uint64_t* packed, const uint64_t* wts, const Geom& g, int64_t backend,
                const Writer& write, Profile* prof) {
#if ZOO_SIMD
  if (backend == kAvx512) return gemm_phase_panels(packed, wts, g, write, prof);
#endif
  gemm_phase(packed, wts, g, kernel_for(backend), write, prof);
}

Geom make_geom(const at::Tensor& x, const at::Tensor& w, int64_t out_channels, int64_t kh,
               int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
               int64_t pr, int64_t dh, int64_t dw, int64_t groups) {
  TORCH_CHECK(x.dim() == 4, "xnor_conv2d: input must be NCHW (4-D), got ", x.dim(), "-D");
  TORCH_CHECK(w.dim() == 3 && w.scalar_type() == at::kLong,
              "xnor_conv2d: packed weight words must be int64 [G, Og_pad, Ks]");
  TORCH_CHECK(groups >= 1 && x.size(1) % groups == 0 && out_channels % groups == 0,
              "xnor_conv2d: channels (", x.size(1), " in, ", out_channels,
              " out) must be divisible by groups=", groups);
  TORCH_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1,
              "xnor_conv2d: kernel, stride and dilation must be >= 1");
  TORCH_CHECK(pt >= 0 && pb >= 0 && pl >= 0 && pr >= 0, "xnor_conv2d: padding must be >= 0");
  Geom g{};
  g.N = x.size(0);
  g.C = x.size(1);
  g.H = x.size(2);
  g.W = x.size(3);
  g.G = groups;
  g.Cg = g.C / groups;
  g.Wg = (g.Cg + 63) / 64;
  g.O = out_channels;
  g.Og = out_channels / groups;
  g.Og_pad = (g.Og + kOutAlign - 1) / kOutAlign * kOutAlign;
  g.kh = kh;
  g.kw = kw;
  g.sh = sh;
  g.sw = sw;
  g.pt = pt;
  g.pl = pl;
  g.dh = dh;
  g.dw = dw;
  const int64_t eff_h = (kh - 1) * dh + 1;
  const int64_t eff_w = (kw - 1) * dw + 1;
  TORCH_CHECK(g.H + pt + pb >= eff_h && g.W + pl + pr >= eff_w,
              "xnor_conv2d: padded input (", g.H + pt + pb, "x", g.W + pl + pr,
              ") is smaller than the kernel (", eff_h, "x", eff_w, ")");
  g.Ho = (g.H + pt + pb - eff_h) / sh + 1;
  g.Wo = (g.W + pl + pr - eff_w) / sw + 1;
  g.P = g.Ho * g.Wo;
  g.R = g.N * g.P;
  g.K = kh * kw * g.Wg;
  g.Ks = (g.K + kWordAlign - 1) / kWordAlign * kWordAlign;
  g.bits = g.Cg * kh * kw;
  TORCH_CHECK(w.size(0) == g.G && w.size(1) == g.Og_pad && w.size(2) == g.Ks,
              "xnor_conv2d: packed weight has shape [", w.size(0), ", ", w.size(1), ", ",
              w.size(2), "] but this input and kernel need [", g.G, ", ", g.Og_pad, ", ", g.Ks,
              "]; pack the weight with zoo.binary.kernels.pack_conv_weight");
  TORCH_CHECK(g.bits < (int64_t(1) << 30), "xnor_conv2d: too many products per output");
  return g;
}

void check_backend(int64_t backend) {
  TORCH_CHECK(backend == kPortable || backend == kAvx2 || backend == kAvx512,
              "xnor: unknown backend code ", backend);
  TORCH_CHECK(backend != kAvx2 || cpu_has_avx2(),
              "xnor: the avx2 backend needs a CPU with AVX2 and POPCNT");
  TORCH_CHECK(backend != kAvx512 || cpu_has_avx512_vpopcntdq(),
              "xnor: the avx512 backend needs a CPU with AVX-512F and AVX-512 VPOPCNTDQ");
}

// `scale` (float32 [O]) given: the output is dot * scale + bias in the input's dtype;
// undefined: int32 dot products.
at::Tensor run_conv(const at::Tensor& x_in, const at::Tensor& w_in, int64_t out_channels,
                    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                    int64_t pl, int64_t pr, int64_t dh, int64_t dw, int64_t groups,
                    int64_t backend, Profile* prof, const at::Tensor& scale_in = at::Tensor(),
                    const at::Tensor& bias_in = at::Tensor()) {
  check_backend(backend);
  TORCH_CHECK(x_in.device().is_cpu() && w_in.device().is_cpu(),
              "xnor_conv2d: the C++ kernel runs on CPU tensors only");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
              "xnor_conv2d: input must be float32 or float64, got ", x_in.scalar_type());
  // A channels_last input is packed where it lies; any other layout is made NCHW first.
  const bool nhwc = x_in.dim() == 4 && !x_in.is_contiguous() &&
                    x_in.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor x = nhwc ? x_in : x_in.contiguous();
  const at::Tensor w = w_in.contiguous();
  const Geom g =
      make_geom(x, w, out_channels, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, groups);
  const bool affine = scale_in.defined();
  at::Tensor scale, bias;
  if (affine) {
    TORCH_CHECK(scale_in.scalar_type() == at::kFloat && scale_in.numel() == g.O,
                "xnor_conv2d: scale must be float32 with one value per output channel");
    scale = scale_in.contiguous();
    if (bias_in.defined()) {
      TORCH_CHECK(bias_in.scalar_type() == at::kFloat && bias_in.numel() == g.O,
                  "xnor_conv2d: bias must be float32 with one value per output channel");
      bias = bias_in.contiguous();
    }
  }
  // Float outputs keep a channels_last input's layout (int32 dot products are NCHW); the
  // AVX-512 float32 path writes it directly, the others convert at the end.
  const bool nhwc_out = nhwc && affine;
  const bool nhwc_tiles = nhwc_out && backend == kAvx512 && x.scalar_type() == at::kFloat;
  at::Tensor out = at::empty({g.N, g.O, g.Ho, g.Wo},
                             affine ? x.options() : x.options().dtype(at::kInt),
                             nhwc_tiles ? at::MemoryFormat::ChannelsLast
                                        : at::MemoryFormat::Contiguous);
  if (g.R == 0 || g.O == 0) return out;
  uint64_t* packed = scratch(tl_packed, static_cast<size_t>(g.N * g.H * g.W * g.G * g.Wg));
  Clock::time_point t0 = Clock::now();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "xnor_pack", [&] {
    if (nhwc)
      pack_nhwc_phase(x.data_ptr<scalar_t>(), g, packed, backend);
    else
      pack_phase(x.data_ptr<scalar_t>(), g, packed, backend);
  });
  if (prof) prof->pack = seconds_since(t0);
  Clock::time_point t1 = Clock::now();
  const uint64_t* words = reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>());
  const bool simd = backend == kAvx512;  // the column writers are AVX-512 code
  if (!affine) {
    run_phase2(packed, words, g, backend, IntWriter{out.data_ptr<int32_t>(), g.P, simd}, prof);
  } else if (nhwc_tiles) {
    const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
    run_phase2(packed, words, g, backend,
               NhwcWriter{out.data_ptr<float>(), g.P, g.O, scale.data_ptr<float>(), b}, prof);
  } else {
    const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "xnor_affine", [&] {
      run_phase2(packed, words, g, backend,
                 AffineWriter<scalar_t>{out.data_ptr<scalar_t>(), g.P, scale.data_ptr<float>(), b,
                                        simd},
                 prof);
    });
  }
  if (prof) prof->phase2 = seconds_since(t1);
  return nhwc_out && !nhwc_tiles ? out.contiguous(at::MemoryFormat::ChannelsLast) : out;
}

at::Tensor xnor_conv2d(const at::Tensor& x, const at::Tensor& w, int64_t out_channels,
                       int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                       int64_t pl, int64_t pr, int64_t dh, int64_t dw, int64_t groups,
                       int64_t backend) {
  return run_conv(x, w, out_channels, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, groups, backend,
                  nullptr);
}

// xnor_conv2d with the per-channel affine epilogue: dot * scale + bias (bias may be None),
// in the input's float type.
at::Tensor xnor_conv2d_affine(const at::Tensor& x, const at::Tensor& w, int64_t out_channels,
                              int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt,
                              int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw,
                              int64_t groups, const at::Tensor& scale,
                              const std::optional<at::Tensor>& bias, int64_t backend) {
  return run_conv(x, w, out_channels, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, groups, backend,
                  nullptr, scale, bias.has_value() ? *bias : at::Tensor());
}

// Same as xnor_conv2d, plus wall times in seconds: packing, the gather+popcount phase, and
// that phase's thread time split into gathering (im2col) and popcount GEMM (summed over
// threads); last, 1 if the AVX2 table kernel ran (else 0).
std::tuple<at::Tensor, std::vector<double>> xnor_conv2d_profile(
    const at::Tensor& x, const at::Tensor& w, int64_t out_channels, int64_t kh, int64_t kw,
    int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh,
    int64_t dw, int64_t groups, int64_t backend) {
  Profile prof;
  at::Tensor out = run_conv(x, w, out_channels, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, groups,
                            backend, &prof);
  return {out, {prof.pack, prof.phase2, prof.gather, prof.popcount, prof.table_kernel ? 1.0 : 0.0}};
}

// Packs signs of a float tensor [N, C, H, W] into words [N, H, W, G, Wg] (int64): exposed so
// tests can check the bit layout against the pure-PyTorch packer.
at::Tensor pack_input(const at::Tensor& x_in, int64_t groups, int64_t backend) {
  check_backend(backend);
  TORCH_CHECK(x_in.dim() == 4, "pack_input: input must be NCHW");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
              "pack_input: input must be float32 or float64");
  TORCH_CHECK(groups >= 1 && x_in.size(1) % groups == 0, "pack_input: bad groups");
  const at::Tensor x = x_in.contiguous();
  Geom g{};
  g.N = x.size(0);
  g.C = x.size(1);
  g.H = x.size(2);
  g.W = x.size(3);
  g.G = groups;
  g.Cg = g.C / groups;
  g.Wg = (g.Cg + 63) / 64;
  at::Tensor out = at::empty({g.N, g.H, g.W, g.G, g.Wg}, x.options().dtype(at::kLong));
  if (out.numel() == 0) return out;
  uint64_t* dst = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "xnor_pack", [&] {
    const scalar_t* src = x.data_ptr<scalar_t>();
    at::parallel_for(0, pack_items(g), 1, [&](int64_t b, int64_t e) {
      pack_items_range(src, g, dst, backend, b, e);
    });
  });
  return out;
}

std::vector<std::string> available_backends() {
  std::vector<std::string> names{"portable"};
  if (cpu_has_avx2()) names.emplace_back("avx2");
  if (cpu_has_avx512_vpopcntdq()) names.emplace_back("avx512");
  return names;
}

void release_scratch() {
  std::vector<uint64_t>().swap(tl_packed);
  std::vector<uint64_t>().swap(tl_planar);
}

}  // namespace

namespace zoo_peak {  // peak.cpp
double xor_popcount_peak(int64_t backend, double seconds);
double fma_peak(double seconds);
}  // namespace zoo_peak

namespace {
// A peak rate of peak.cpp on all of torch's threads at once (the sum of their rates): one
// loop per thread, so the figure counts the cores a multi-threaded layer runs on.
double peak_rate(bool fma, int64_t backend, double seconds) {
  check_backend(backend);
  const int n = at::get_num_threads();
  std::vector<double> rates(n, 0.0);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      rates[i] = fma ? zoo_peak::fma_peak(seconds) : zoo_peak::xor_popcount_peak(backend, seconds);
  });
  double total = 0;
  for (double r : rates) total += r;
  return total;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "zoo 1-bit XNOR kernels (XOR + popcount on bit-packed signs)";
  m.def("xnor_conv2d", &xnor_conv2d, "Binary conv: int32 dot products of signs");
  m.def("xnor_conv2d_affine", &xnor_conv2d_affine,
        "Binary conv with the epilogue dot * scale + bias, in the input's dtype");
  m.def("xnor_conv2d_profile", &xnor_conv2d_profile,
        "xnor_conv2d plus [pack, phase2, gather, popcount] seconds and the table-kernel flag");
  m.def("pack_input", &pack_input, "Sign-pack NCHW floats into [N, H, W, G, Wg] words");
  m.def("available_backends", &available_backends, "C++ backends this CPU can run");
  m.def("best_backend", &best_backend, "Code of the fastest backend for this CPU");
  m.def("peak_rate", &peak_rate,
        "Register-only rate on torch's threads: float32 FMAs/s (fma=True) or 64-bit words/s "
        "through XOR + popcount + add with a backend's instructions");
  m.def("release_scratch", &release_scratch, "Free the calling thread's packing buffer");
  m.attr("PORTABLE") = static_cast<int64_t>(kPortable);
  m.attr("AVX2") = static_cast<int64_t>(kAvx2);
  m.attr("AVX512") = static_cast<int64_t>(kAvx512);
  m.attr("WORD_ALIGN") = kWordAlign;
  m.attr("OUT_ALIGN") = kOutAlign;
}
