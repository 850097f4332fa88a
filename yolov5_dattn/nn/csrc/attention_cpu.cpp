// Fused softmax attention for the CPU in fp32, forward and backward, for heads of 4 to 80 channels (DISPATCH
// lists the widths compiled: those of the shipped models, 8 heads on c2 * e channels).
//
// Why it exists: PyTorch's fused CPU kernel spends most of its time outside the matmuls when a head is narrow,
// and DAttention's heads are narrow (4 to 16 channels at P3). Here the score block stays in L1 and the
// softmax is folded into the same pass (flash attention: running max and sum per query row; the backward
// recomputes the probabilities from the saved log-sum-exp instead of storing the (M x N) matrix). Every product
// is an FMA, and what else a score costs is kept to a few instructions: with 16 channels per head a score is only
// 2 FMAs forward and 5 backward, so the exponential and the bookkeeping around it are what bound the speed.
//
// Two kinds of pass: those that contract over channels (the scores q.k, and dP = grad_out.v) are vectorised over
// keys and work for any D; those that sum over keys or queries into a head's channels (P.v, the gradients) are
// vectorised over channels and work on DP = D rounded up to a whole vector, with zero channels beyond D (a head of 4
// channels pays for 16 there: see `Padded`), except the forward's P.v for heads of 4 and 8 channels, which puts
// 4 or 2 query rows in a vector (see `Rows`).
//
// Layout: tokens, (B, L, C) with one head's D channels at `head * D` of each row: the layout DAttention
// projects into, so nothing is copied on the way in. q, k and v may be strided views (k and v are the
// halves of one (B, N, 2C) projection), given as (row stride, batch stride); grad_out may be any strided
// (B, M, C) view (DAttention's is the transpose of an NCHW map), given as (row, batch, channel) strides; o and the
// gradients are contiguous (B, L, C). lse is (B, heads, M), in base 2.
// Scores are computed in base 2: q is pre-multiplied by scale * log2(e) and exp2 replaces exp.
// One call handles the (batch, head) pairs [first, last) on `threads` OpenMP threads (see over_pairs).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cmath>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef float vf __attribute__((vector_size(64)));            // 16 floats (one AVX-512 register)
typedef float vfu __attribute__((vector_size(64), aligned(4)));
typedef int32_t vi __attribute__((vector_size(64)));
static const int W = 16;

static inline vf load(const float* p) { return *(const vfu*)p; }
static inline void store(float* p, vf x) { *(vfu*)p = x; }
// the first `count` lanes of x (all when count >= W): a head narrower than a vector must not write its neighbour's
// channels, which another thread may be writing
static inline void store_first(float* p, vf x, int count) {
    if (count >= W) return store(p, x);
#if defined(__AVX512F__)
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << count) - 1), (__m512)x);
#else
    for (int i = 0; i < count; i++) p[i] = x[i];
#endif
}
// a head's D channels padded to whole vectors: the passes vectorised over channels work on DP, with zeros beyond D
template <int D> struct Padded { static constexpr int P = (D + W - 1) / W * W; };
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }
// spelled out: `(vf){} + x` costs a scalar add per broadcast (0 + x is not x for x = -0)
static inline vf bcast(float x) { return (vf){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

// 2^x for x <= TAU (a score minus its row's offset, which is at least the row's maximum minus TAU: forward_one)
#if defined(__AVX512F__)
// 2^floor(x) times a degree-5 minimax polynomial of x - floor(x) in [0, 1): relative error < 2e-7, fp32 rounding
// (a degree-4 one is not accurate enough for the gradient of q where keys are large). The forward's softmax pass
// is bound by this dependency chain's latency, so it is kept short: vreduceps gives x - floor(x) in one step and
// vscalefps applies 2^floor(x), flushing to 0 far below.
static inline vf exp2v(vf x) {
    const vf f = (vf)_mm512_reduce_ps((__m512)x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const vf p = ((((1.87757669e-3f * f + 8.98934063e-3f) * f + 5.58263175e-2f) * f + 2.40153611e-1f) * f
                  + 6.93153083e-1f) * f + 9.99999940e-01f;
    return (vf)_mm512_scalef_ps((__m512)p, (__m512)x);
}
#else
static inline vf exp2v(vf x) {
    x = vmax(x, bcast(-126.0f));  // below: 0 (to float precision) without overflowing the exponent bits
    const vf n = (x + 12582912.0f) - 12582912.0f;  // round to nearest
    const vf f = x - n;
    const vf p = ((((1.3333558e-3f * f + 9.6181291e-3f) * f + 5.5504109e-2f) * f + 2.4022651e-1f) * f
                  + 6.9314718e-1f) * f + 1.0f;
    const vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}
#endif

// max / sum over the 16 lanes, broadcast to all of them (4 shuffle steps instead of 15 dependent scalar ops)
static const vi SWAP8 = {8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7};
static const vi SWAP4 = {4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11};
static const vi SWAP2 = {2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13};
static const vi SWAP1 = {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14};
static inline vf allmax(vf x) {
    x = vmax(x, __builtin_shuffle(x, SWAP8));
    x = vmax(x, __builtin_shuffle(x, SWAP4));
    x = vmax(x, __builtin_shuffle(x, SWAP2));
    return vmax(x, __builtin_shuffle(x, SWAP1));
}
static inline bool any_above(vf x, float t) {
#if defined(__AVX512F__)
    return _mm512_cmp_ps_mask((__m512)x, (__m512)bcast(t), _CMP_GT_OQ) != 0;
#else
    for (int i = 0; i < W; i++) if (x[i] > t) return true;
    return false;
#endif
}
static inline vf allsum(vf x) {
    x += __builtin_shuffle(x, SWAP8);
    x += __builtin_shuffle(x, SWAP4);
    x += __builtin_shuffle(x, SWAP2);
    return x + __builtin_shuffle(x, SWAP1);
}

// a block of BQ query rows against BK keys: the score block (8 KB) and the key/value rows it reads stay in L1
enum { BQ = 8, BK = 256 };
static const float TAU = 8.0f;  // see forward_one

// rows (R x D, stride DP) times the transposed block Xt (D x ld_t, columns [0, n)), plus offset[r] on row r
// -> S (BQ x BK); with rmax, also each row's running lane-wise maximum (one vector per row, updated). The offset
// starts the sums, so subtracting it costs nothing. Scores themselves start from 0, forward and backward alike: the
// backward's must round exactly as the forward's did, or its probabilities no longer sum to 1 with the saved
// log-sum-exp (which shows as a large error in the gradient of q where keys are large).
template <int D, int R = BQ, int K = BK>
static inline void rows_times_t(const float* rows, const float* Xt, int64_t ld_t, int n, const float* offset,
                                float* S, vf* rmax) {
    for (int j = 0; j < n; j += 4 * W) {
        for (int r = 0; r < R; r += 4) {  // 4 rows x 4 vectors: 16 accumulators, 8 loads per 16 FMAs
            vf a[4][4];
            for (int u = 0; u < 4; u++) a[u][0] = a[u][1] = a[u][2] = a[u][3] = bcast(offset[r + u]);
            for (int c = 0; c < D; c++) {
                const float* t = Xt + c * ld_t + j;
                const vf t0 = load(t), t1 = load(t + W), t2 = load(t + 2 * W), t3 = load(t + 3 * W);
                for (int u = 0; u < 4; u++) {
                    const vf x = bcast(rows[(r + u) * Padded<D>::P + c]);
                    a[u][0] += x * t0; a[u][1] += x * t1; a[u][2] += x * t2; a[u][3] += x * t3;
                }
            }
            for (int u = 0; u < 4; u++) {
                float* s = S + (r + u) * K + j;
                store(s, a[u][0]); store(s + W, a[u][1]); store(s + 2 * W, a[u][2]); store(s + 3 * W, a[u][3]);
                if (rmax) rmax[r + u] = vmax(vmax(rmax[r + u], vmax(a[u][0], a[u][1])), vmax(a[u][2], a[u][3]));
            }
        }
    }
}

// copy rows [i, i+R) of x (row stride ld, channel stride ldc, head offset applied) to a packed (R x DP) block,
// times mul; rows beyond m and channels beyond D are zero
template <int D, int R = BQ>
static inline void pack_rows(const float* x, int64_t ld, int64_t i, int64_t m, float mul, float* out, int64_t ldc = 1) {
    constexpr int DP = Padded<D>::P;
    for (int r = 0; r < R; r++) {
        int c = 0;
        if (i + r < m) for (; c < D; c++) out[r * DP + c] = x[(i + r) * ld + c * ldc] * mul;
        for (; c < DP; c++) out[r * DP + c] = 0.0f;
    }
}

// (n x D, stride ld) -> (D x n_pad), zero-padded to n_pad columns. W rows at a time, copied first to a contiguous
// block: walking a column of x reads rows 1-4 KB apart, which fall into a few of L1's sets and miss
template <int D>
static void transpose(const float* x, int64_t ld, int64_t n, int64_t n_pad, float* xt) {
    alignas(64) float rows[W * D];
    for (int64_t j0 = 0; j0 < n; j0 += W) {
        const int64_t j1 = j0 + W < n ? j0 + W : n;
        for (int64_t j = j0; j < j1; j++) memcpy(rows + (j - j0) * D, x + j * ld, sizeof(float) * D);
        for (int c = 0; c < D; c++)
            for (int64_t j = j0; j < j1; j++) xt[c * n_pad + j] = rows[(j - j0) * D + c];
    }
    for (int c = 0; c < D; c++)
        for (int64_t j = n; j < n_pad; j++) xt[c * n_pad + j] = 0.0f;
}

// (n x D, stride ld) -> contiguous (n x DP), zeros beyond D: rows 512 B apart would all fall into 8 of L1's 64 sets
template <int D>
static void pack(const float* x, int64_t ld, int64_t n, float* out) {
    constexpr int DP = Padded<D>::P;
    for (int64_t j = 0; j < n; j++) {
        memcpy(out + j * DP, x + j * ld, sizeof(float) * D);
        if (DP > D) memset(out + j * DP + D, 0, sizeof(float) * (DP - D));
    }
}

// Heads of 4 or 8 channels fill a quarter or half of a vector, so the forward's P.v pass, vectorised over channels,
// would spend 3/4 or 1/2 of its FMAs on padding. There it works on R = W / D query rows at once instead: lane
// c * R + u of a group's accumulator is channel c of its row u. The weights come as each key's R-row tuple
// (`interleave_rows`), broadcast across the vector, and the values as each key's channels repeated R times
// (`pack_repeated`); both list the keys of every block of W in the order the interleave leaves them (`key_at`).
template <int D> struct Rows { static constexpr int R = (D == 4 || D == 8) ? W / D : 1; };

// the key stored at tuple q (0 <= q < W) of a block of W keys, after interleave_rows
template <int R> static inline int key_at(int q) {
    return R == 2 ? 4 * (q % 8 / 2) + 2 * (q / 8) + q % 2 : R == 4 ? 4 * (q % 4) + q / 4 : q;
}

// the R weights at p (one key's tuple) repeated across the vector
template <int R> static inline vf tuple_bcast(const float* p) {
#if defined(__AVX512F__)
    if (R == 2) { double d; memcpy(&d, p, sizeof d); return (vf)_mm512_castpd_ps(_mm512_set1_pd(d)); }
    if (R == 4) return (vf)_mm512_broadcast_f32x4(_mm_loadu_ps(p));
#endif
    vf x;
    for (int i = 0; i < W; i++) x[i] = p[i % R];
    return x;
}

// rows [g*R, g*R + R) of the score block S (BQ x BK), keys [0, n16), as key tuples at T (row stride ignored:
// n16 * R floats), keys of each block of W in key_at order
template <int R> static inline void interleave_rows(const float* S, int n16, float* T) {
    static const vi LO = {0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29};
    static const vi HI = {2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31};
    static const vi A = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
    static const vi B = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31};
    for (int j = 0; j < n16; j += W) {
        if (R == 2) {
            const vf p0 = load(S + j), p1 = load(S + BK + j);
            store(T + 2 * j, __builtin_shuffle(p0, p1, LO));
            store(T + 2 * j + W, __builtin_shuffle(p0, p1, HI));
        } else {
            const vf p0 = load(S + j), p1 = load(S + BK + j), p2 = load(S + 2 * BK + j), p3 = load(S + 3 * BK + j);
            const vf t0 = __builtin_shuffle(p0, p1, LO), t1 = __builtin_shuffle(p0, p1, HI);
            const vf t2 = __builtin_shuffle(p2, p3, LO), t3 = __builtin_shuffle(p2, p3, HI);
            store(T + 4 * j, __builtin_shuffle(t0, t2, A));
            store(T + 4 * j + W, __builtin_shuffle(t0, t2, B));
            store(T + 4 * j + 2 * W, __builtin_shuffle(t1, t3, A));
            store(T + 4 * j + 3 * W, __builtin_shuffle(t1, t3, B));
        }
    }
}

// (n x D, stride ld) -> (n16 x W) for Rows<D>::R > 1: key j's channels each repeated R times (lane c * R + u), keys
// of each block of W in key_at order, zeros for keys beyond n up to n16 (n rounded up to W)
template <int D>
static void pack_repeated(const float* x, int64_t ld, int64_t n, float* out) {
    constexpr int R = Rows<D>::R;
    const int64_t n16 = (n + W - 1) / W * W;
    for (int64_t j0 = 0; j0 < n16; j0 += W)
        for (int q = 0; q < W; q++) {
            const int64_t j = j0 + key_at<R>(q);
            float* dst = out + (j0 + q) * W;
            for (int c = 0; c < D; c++)
                for (int u = 0; u < R; u++) dst[c * R + u] = j < n ? x[j * ld + c] : 0.0f;
        }
}

template <int D>
static void forward_one(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                        float* o, int64_t ldo, float* lse, int64_t m, int64_t n, float scale,
                        float* kt, float* vp, int64_t n_pad) {
    constexpr int DP = Padded<D>::P, R = Rows<D>::R;
    transpose<D>(k, ldk, n, n_pad, kt);
    if (R > 1) pack_repeated<D>(v, ldv, n, vp); else pack<D>(v, ldv, n, vp);
    const float qmul = scale * 1.4426950408889634f;  // scores in base 2
    // acc: BQ rows of DP, or (R > 1) BQ / R groups of W lanes; T: the score block as key tuples (R > 1)
    alignas(64) float qb[BQ * DP], S[BQ * BK], acc[BQ * DP], T[R > 1 ? BQ * BK : 1];
    const float zeros[BQ] = {};
    float mx[BQ];
    vf sum[BQ];  // lane-wise: summed across lanes once, at the end
    for (int64_t i = 0; i < m; i += BQ) {
        pack_rows<D>(q, ldq, i, m, qmul, qb);
        for (int r = 0; r < BQ; r++) { mx[r] = 0.0f; sum[r] = bcast(0.0f); }
        memset(acc, 0, sizeof(acc));
        for (int64_t j0 = 0; j0 < n; j0 += BK) {
            const int nb = (int)(n - j0 < BK ? n - j0 : BK);
            const int nb_pad = (nb + 4 * W - 1) / (4 * W) * (4 * W);
            vf rmax[BQ];
            for (int r = 0; r < BQ; r++) rmax[r] = bcast(-1e30f);
            rows_times_t<D>(qb, kt + j0, n_pad, nb_pad, zeros, S, nb == nb_pad ? rmax : nullptr);
            for (int r = 0; r < BQ; r++) {
                float* s = S + r * BK;
                if (nb < nb_pad) {  // the last, partial block: padded keys get no weight
                    for (int j = nb; j < nb_pad; j++) s[j] = -1e30f;
                    for (int j = 0; j < nb_pad; j += W) rmax[r] = vmax(rmax[r], load(s + j));
                }
                // The row's offset mx is its maximum so far, raised only when a block's score exceeds it by more than
                // TAU (weights up to 2^TAU are harmless in fp32): after the first blocks that is rare, so the common
                // case is one pass of exp2 and nothing else, with the sum kept lane-wise and no rescaling
                if (j0 == 0 || any_above(rmax[r], mx[r] + TAU)) {
                    const float new_mx = allmax(rmax[r])[0];
                    const float alpha = j0 == 0 ? 0.0f : exp2v(bcast(mx[r] - new_mx))[0];
                    mx[r] = new_mx;
                    sum[r] *= alpha;
                    if (R > 1)  // row r's lanes of its group (rare: see above)
                        for (int c = 0; c < D; c++) acc[r / R * W + c * R + r % R] *= alpha;
                    else
                        for (int c = 0; c < DP; c += W) store(acc + r * DP + c, load(acc + r * DP + c) * alpha);
                }
                const vf shift = bcast(mx[r]);
                vf vs = sum[r];
                for (int j = 0; j < nb_pad; j += W) { vf p = exp2v(load(s + j) - shift); store(s + j, p); vs += p; }
                sum[r] = vs;
            }
            if (R > 1) {  // acc[g] += sum_j P[g's rows][j] * v[j], R rows a vector (see Rows)
                constexpr int NG = BQ / R;
                const int n16 = (nb + W - 1) / W * W;  // the keys beyond nb have P = 0 and v = 0
                for (int g = 0; g < NG; g++) interleave_rows<R>(S + g * R * BK, n16, T + g * R * BK);
                vf a[NG], b[NG];
                for (int g = 0; g < NG; g++) { a[g] = load(acc + g * W); b[g] = bcast(0.0f); }
                for (int j = 0; j < n16; j += 2) {
                    vf v0 = load(vp + (j0 + j) * W), v1 = load(vp + (j0 + j + 1) * W);
#if defined(__AVX512F__)
                    // in registers: GCC would fold the loads into every FMA, and the tuple broadcasts need the
                    // load ports too (on Zen 4 a 512-bit load takes both)
                    __asm__("" : "+v"(v0), "+v"(v1));
#endif
                    for (int g = 0; g < NG; g++) {
                        a[g] += tuple_bcast<R>(T + g * R * BK + j * R) * v0;
                        b[g] += tuple_bcast<R>(T + g * R * BK + (j + 1) * R) * v1;
                    }
                }
                for (int g = 0; g < NG; g++) store(acc + g * W, a[g] + b[g]);
                continue;
            }
            // acc[r] += sum_j P[r][j] * v[j], even and odd keys in separate sums: 2 x BQ chains of FMAs in flight
            for (int c = 0; c < DP; c += W) {
                vf a[BQ], b[BQ];
                for (int r = 0; r < BQ; r++) { a[r] = load(acc + r * DP + c); b[r] = bcast(0.0f); }
                int j = 0;
                for (; j + 1 < nb; j += 2) {
                    const vf v0 = load(vp + (j0 + j) * DP + c), v1 = load(vp + (j0 + j + 1) * DP + c);
                    for (int r = 0; r < BQ; r++) {
                        a[r] += bcast(S[r * BK + j]) * v0;
                        b[r] += bcast(S[r * BK + j + 1]) * v1;
                    }
                }
                if (j < nb) {
                    const vf v0 = load(vp + (j0 + j) * DP + c);
                    for (int r = 0; r < BQ; r++) a[r] += bcast(S[r * BK + j]) * v0;
                }
                for (int r = 0; r < BQ; r++) store(acc + r * DP + c, a[r] + b[r]);
            }
        }
        for (int r = 0; r < BQ && i + r < m; r++) {
            const float total = allsum(sum[r])[0], inv = 1.0f / total;
            if (R > 1)
                for (int c = 0; c < D; c++) o[(i + r) * ldo + c] = acc[r / R * W + c * R + r % R] * inv;
            else
                for (int c = 0; c < DP; c += W) store_first(o + (i + r) * ldo + c, load(acc + r * DP + c) * inv, D - c);
            lse[i + r] = mx[r] + log2f(total);
        }
    }
}

// the backward's block: 32 query rows against 64 keys. Each sweep over the keys reads the head's five key-side
// arrays (about as much as L2 holds on a P3 map), so the more rows a sweep serves the better, up to where the
// two score blocks would no longer fit in L1 beside the rows. The passes that keep rows in registers take them
// RH = 16 at a time.
enum { RB = 32, RH = 16, KB = 64, G = 8 };

// g[j] += sum_r w[r][j] x[r] for the keys j < n of a block: w is RH rows of the block's weights (row stride KB),
// x one vector per row, g the keys' rows (stride DP). G keys at a time: each key's sum is a chain of dependent FMAs, and two FMA
// units at 4 cycles' latency need 8 chains in flight. n is a multiple of G.
template <int D>
static inline void keys_plus_weighted_rows(const float* w, const vf* x, int n, float* g) {
    for (int j = 0; j < n; j += G) {
        vf a[G];
        for (int u = 0; u < G; u++) a[u] = load(g + (j + u) * Padded<D>::P);
        for (int r = 0; r < RH; r++)
            for (int u = 0; u < G; u++) a[u] += bcast(w[r * KB + j + u]) * x[r];
        for (int u = 0; u < G; u++) store(g + (j + u) * Padded<D>::P, a[u]);
    }
}

template <int D>
static void backward_one(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                         const float* o, const float* go, int64_t go_row, int64_t go_col, const float* lse,
                         float* gq, float* gk, float* gv, int64_t ld, int64_t m, int64_t n, float scale,
                         float* kt, float* vt, float* kp, float* gkp, float* gvp, int64_t n_pad) {
    transpose<D>(k, ldk, n, n_pad, kt);
    transpose<D>(v, ldv, n, n_pad, vt);
    constexpr int DP = Padded<D>::P;
    pack<D>(k, ldk, n, kp);
    memset(kp + n * DP, 0, sizeof(float) * (n_pad - n) * DP);  // padded keys: rows of zeros, never NaN
    memset(gkp, 0, sizeof(float) * n_pad * DP);
    memset(gvp, 0, sizeof(float) * n_pad * DP);
    const float qmul = scale * 1.4426950408889634f;
    alignas(64) float qb[RB * DP], gob[RB * DP], P[RB * KB], dS[RB * KB], gqb[RB * DP];
    const float zeros[RB] = {};
    float neg_delta[RB], l[RB];
    for (int64_t i = 0; i < m; i += RB) {
        pack_rows<D, RB>(q, ldq, i, m, qmul, qb);
        pack_rows<D, RB>(go, go_row, i, m, 1.0f, gob, go_col);
        for (int r = 0; r < RB; r++) {
            float d = 0.0f;
            if (i + r < m) for (int c = 0; c < D; c++) d += gob[r * DP + c] * o[(i + r) * ld + c];
            neg_delta[r] = -d;
            l[r] = i + r < m ? lse[i + r] : 1e30f;  // rows beyond m: probabilities 0
        }
        memset(gqb, 0, sizeof(gqb));
        for (int64_t j0 = 0; j0 < n; j0 += KB) {
            const int nb = (int)(n - j0 < KB ? n - j0 : KB);
            const int nb_pad = (nb + 4 * W - 1) / (4 * W) * (4 * W);
            rows_times_t<D, RB, KB>(qb, kt + j0, n_pad, nb_pad, zeros, P, nullptr);  // scores
            rows_times_t<D, RB, KB>(gob, vt + j0, n_pad, nb_pad, neg_delta, dS, nullptr);  // dP - delta
            for (int r = 0; r < RB; r++) {
                const vf lr = bcast(l[r]);
                float *p = P + r * KB, *ds = dS + r * KB;
                for (int j = 0; j < nb_pad; j += W) {
                    vf pj = exp2v(load(p + j) - lr);
                    store(p + j, pj);
                    store(ds + j, pj * load(ds + j));
                }
                for (int j = nb; j < nb_pad; j++) p[j] = ds[j] = 0.0f;  // padded keys
            }
            // gv[j] += sum_r P[r][j] go[r], gk[j] += sum_r dS[r][j] q[r], gq[r] += sum_j dS[r][j] k[j]: three
            // passes, so that each one's RH rows stay in registers (nb_pad is a multiple of G and the padded keys
            // have P = dS = 0)
            for (int c = 0; c < DP; c += W)
                for (int h = 0; h < RB; h += RH) {
                    vf gor[RH];
                    for (int r = 0; r < RH; r++) gor[r] = load(gob + (h + r) * DP + c);
                    keys_plus_weighted_rows<D>(P + h * KB, gor, nb_pad, gvp + j0 * DP + c);
                    vf qr[RH];
                    for (int r = 0; r < RH; r++) qr[r] = load(qb + (h + r) * DP + c);
                    keys_plus_weighted_rows<D>(dS + h * KB, qr, nb_pad, gkp + j0 * DP + c);
                    vf gqr[RH];
                    for (int r = 0; r < RH; r++) gqr[r] = load(gqb + (h + r) * DP + c);
                    const float* ds = dS + h * KB;
                    for (int j = 0; j < nb_pad; j += 2) {
                        const vf k0 = load(kp + (j0 + j) * DP + c), k1 = load(kp + (j0 + j + 1) * DP + c);
                        for (int r = 0; r < RH; r++) {  // two statements: two FMAs (one expression: mul, FMA and add)
                            gqr[r] += bcast(ds[r * KB + j]) * k0;
                            gqr[r] += bcast(ds[r * KB + j + 1]) * k1;
                        }
                    }
                    for (int r = 0; r < RH; r++) store(gqb + (h + r) * DP + c, gqr[r]);
                }
        }
        for (int r = 0; r < RB && i + r < m; r++)
            for (int c = 0; c < DP; c += W) store_first(gq + (i + r) * ld + c, load(gqb + r * DP + c) * scale, D - c);
    }
    // gk accumulated dS * (q * scale * log2e) but the scores' scale is applied once: undo the log2e
    const float kfix = 1.0f / 1.4426950408889634f;
    for (int64_t j = 0; j < n; j++)
        for (int c = 0; c < DP; c += W) {
            store_first(gk + j * ld + c, load(gkp + j * DP + c) * kfix, D - c);
            store_first(gv + j * ld + c, load(gvp + j * DP + c), D - c);
        }
}

// strides of q, k and v: {row, batch} each; and of grad_out (backward only): {row, batch, channel}
struct Strides { int64_t q_row, q_batch, k_row, k_batch, v_row, v_batch, go_row, go_batch, go_col; };

static inline int64_t padded(int64_t n) { return (n + 4 * W - 1) / (4 * W) * (4 * W) + ((int)BK > (int)KB ? (int)BK : (int)KB); }

// This thread's scratch buffer of at least `floats` floats (64-byte aligned), kept between calls: the callers are
// long-lived pool threads, and a fresh multi-MB block per call costs its page faults again each time (when glibc
// hands large blocks to mmap). Freed when the thread ends; nullptr when out of memory.
static float* scratch(size_t floats) {
    struct Buffer {
        float* data = nullptr;
        size_t size = 0;
        ~Buffer() { free(data); }
    };
    static thread_local Buffer buffer;
    if (buffer.size < floats) {
        free(buffer.data);
        buffer.data = (float*)aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        buffer.size = buffer.data ? floats : 0;
    }
    return buffer.data;
}

// one(bh) for the (batch, head) pairs bh in [first, last), spread over `threads` OpenMP threads; the largest code
// one returned. Built with -fopenmp, the OpenMP runtime is PyTorch's own when that is libgomp (the loader reuses
// the libgomp.so.1 torch loaded), so these are the pool threads that ran the matmul just before, still spinning
// for work: they start at once, where Python threads would have to share the cores with them. Without OpenMP the
// pragma is ignored and the caller spreads its own threads over calls with threads = 1.
template <typename One>
static int over_pairs(int64_t first, int64_t last, int64_t threads, One one) {
    int code = 0;
    #pragma omp parallel for schedule(dynamic, 1) num_threads((int)threads) reduction(max: code) if (threads > 1)
    for (int64_t bh = first; bh < last; bh++) {
        const int c = one(bh);
        code = c > code ? c : code;
    }
    return code;
}

template <int D>
static int forward_range(const float* q, const float* k, const float* v, Strides st, float* o, float* lse,
                         int64_t heads, int64_t m, int64_t n, float scale, int64_t first, int64_t last,
                         int64_t threads) {
    const int64_t n_pad = padded(n), ld = heads * D;
    return over_pairs(first, last, threads, [&](int64_t bh) {
        constexpr int DP = Padded<D>::P;
        float* buf = scratch((size_t)(DP * n_pad * 2));
        if (!buf) return 1;
        const int64_t b = bh / heads, h = bh % heads;
        forward_one<D>(q + b * st.q_batch + h * D, st.q_row, k + b * st.k_batch + h * D, st.k_row,
                       v + b * st.v_batch + h * D, st.v_row, o + b * m * ld + h * D, ld, lse + bh * m, m, n, scale,
                       buf, buf + DP * n_pad, n_pad);
        return 0;
    });
}

template <int D>
static int backward_range(const float* q, const float* k, const float* v, Strides st, const float* o,
                          const float* go, const float* lse, float* gq, float* gk, float* gv, int64_t heads,
                          int64_t m, int64_t n, float scale, int64_t first, int64_t last, int64_t threads) {
    const int64_t n_pad = padded(n), ld = heads * D;
    return over_pairs(first, last, threads, [&](int64_t bh) {
        constexpr int DP = Padded<D>::P;
        float* buf = scratch((size_t)(DP * n_pad * 5));
        if (!buf) return 1;
        const int64_t b = bh / heads, h = bh % heads, qo = b * m * ld + h * D, ko = b * n * ld + h * D;
        const float* go_head = go + b * st.go_batch + h * D * st.go_col;
        backward_one<D>(q + b * st.q_batch + h * D, st.q_row, k + b * st.k_batch + h * D, st.k_row,
                        v + b * st.v_batch + h * D, st.v_row, o + qo, go_head, st.go_row, st.go_col, lse + bh * m,
                        gq + qo, gk + ko, gv + ko, ld, m, n, scale,
                        buf, buf + DP * n_pad, buf + 2 * DP * n_pad, buf + 3 * DP * n_pad, buf + 4 * DP * n_pad, n_pad);
        return 0;
    });
}

// head_dim -> the kernel compiled for it; 2 = not compiled (the caller uses PyTorch's kernel). The widths are the
// shipped models' (HEAD_DIMS in cpu_attention.py lists the same); each one is a template instance, so the list is
// kept to those to keep the first build short.
#define DISPATCH(D, fn, ...) switch (D) { \
    case 4: return fn<4>(__VA_ARGS__); case 8: return fn<8>(__VA_ARGS__); case 12: return fn<12>(__VA_ARGS__); \
    case 16: return fn<16>(__VA_ARGS__); case 20: return fn<20>(__VA_ARGS__); case 24: return fn<24>(__VA_ARGS__); \
    case 32: return fn<32>(__VA_ARGS__); case 40: return fn<40>(__VA_ARGS__); case 48: return fn<48>(__VA_ARGS__); \
    case 64: return fn<64>(__VA_ARGS__); case 80: return fn<80>(__VA_ARGS__); \
    default: return 2; }

// Returns 0, 1 when out of memory, 2 when head_dim is not one compiled here.
extern "C" int attention_forward(const float* q, const float* k, const float* v, const int64_t* strides,
                                 float* o, float* lse, int64_t heads, int64_t d, int64_t m, int64_t n, float scale,
                                 int64_t first, int64_t last, int64_t threads) {
    const Strides st = {strides[0], strides[1], strides[2], strides[3], strides[4], strides[5], 0, 0, 0};
    DISPATCH(d, forward_range, q, k, v, st, o, lse, heads, m, n, scale, first, last, threads);
}

extern "C" int attention_backward(const float* q, const float* k, const float* v, const int64_t* strides,
                                  const float* o, const float* go, const float* lse, float* gq, float* gk,
                                  float* gv, int64_t heads, int64_t d, int64_t m, int64_t n, float scale,
                                  int64_t first, int64_t last, int64_t threads) {
    const Strides st = {strides[0], strides[1], strides[2], strides[3], strides[4], strides[5],
                        strides[6], strides[7], strides[8]};
    DISPATCH(d, backward_range, q, k, v, st, o, go, lse, gq, gk, gv, heads, m, n, scale, first, last, threads);
}

// 1 when built with OpenMP (one call runs on `threads` threads), 0 when not (each call runs on its caller's thread)
extern "C" int attention_openmp() {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
