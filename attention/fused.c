/* Fused CPU inference passes for SE, ECA, CA and CBAM (float32, contiguous NCHW, single thread).
 *
 * With library ops each gate costs several passes over the feature map (a pooling per direction or
 * statistic, a broadcast product per gate); on a 20x20 neck map every pass costs about what the
 * whole useful work does. Here each loop reads the map once and writes at most one output. The
 * small matrix products between the passes stay in PyTorch (attention/fused.py).
 * Inner loops run over contiguous memory so the compiler vectorizes them (built with -O3
 * -fopenmp-simd: the simd pragmas allow reordering of the float reductions, nothing else).
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define R restrict /* no two arguments overlap: lets the compiler vectorize */

#if defined(__AVX512F__)
#include <immintrin.h>

/* A block of up to 64 columns (the AVX-512 loops' unit): nv vectors of 16, mask[v] covering exactly the
 * columns of vector v, so a short row (20 floats at P5) ends in one masked load or store. */
typedef struct {
    long nv;
    __mmask16 mask[4];
} Chunk;

static inline Chunk chunk64(long width) {
    Chunk ck = {(width + 15) / 16, {0, 0, 0, 0}};
    for (int v = 0; v < 4; ++v) {
        const long n = width - 16 * v;
        ck.mask[v] = (__mmask16)(n >= 16 ? 0xFFFFu : n <= 0 ? 0u : (1u << n) - 1u);
    }
    return ck;
}

/* Stores the chunk's vectors a0..a3 (those it has) at o. */
static inline void store64(float *o, Chunk ck, __m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    _mm512_mask_storeu_ps(o, ck.mask[0], a0);
    if (ck.nv > 1) _mm512_mask_storeu_ps(o + 16, ck.mask[1], a1);
    if (ck.nv > 2) _mm512_mask_storeu_ps(o + 32, ck.mask[2], a2);
    if (ck.nv > 3) _mm512_mask_storeu_ps(o + 48, ck.mask[3], a3);
}

/* Column sums stay in registers while the rows stream past (adding into memory row after row
 * chains every row on a store-to-load round trip), 64 columns at a time; each row's slice is added
 * up vertically, then horizontally once. rows must be zeroed; cols is written. */
static void row_col_sums(const float *R xp, long h, long w, float *R rows, float *R cols) {
    for (long j0 = 0; j0 < w; j0 += 64) {
        const Chunk ck = chunk64(w - j0 < 64 ? w - j0 : 64);
        const long nv = ck.nv;
        const __mmask16 k0 = ck.mask[0], k1 = ck.mask[1], k2 = ck.mask[2], k3 = ck.mask[3];
        __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        for (long i = 0; i < h; ++i) {
            const float *r = xp + i * w + j0;
            __m512 v0, v1 = _mm512_setzero_ps(), v2 = v1, v3 = v1;
            v0 = _mm512_maskz_loadu_ps(k0, r);
            if (nv > 1) v1 = _mm512_maskz_loadu_ps(k1, r + 16);
            if (nv > 2) v2 = _mm512_maskz_loadu_ps(k2, r + 32);
            if (nv > 3) v3 = _mm512_maskz_loadu_ps(k3, r + 48);
            c0 = _mm512_add_ps(c0, v0), c1 = _mm512_add_ps(c1, v1);
            c2 = _mm512_add_ps(c2, v2), c3 = _mm512_add_ps(c3, v3);
            rows[i] += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(v0, v1), _mm512_add_ps(v2, v3)));
        }
        store64(cols + j0, ck, c0, c1, c2, c3);
    }
}
#else
static void row_col_sums(const float *R xp, long h, long w, float *R rows, float *R cols) {
    for (long j = 0; j < w; ++j) cols[j] = 0.0f;
    long i = 0;
    for (; i + 4 <= h; i += 4) { /* four rows per update of cols: a quarter of the store-to-load chain */
        const float *r0 = xp + i * w, *r1 = r0 + w, *r2 = r1 + w, *r3 = r2 + w;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (long j = 0; j < w; ++j) {
            s0 += r0[j], s1 += r1[j], s2 += r2[j], s3 += r3[j];
            cols[j] += (r0[j] + r1[j]) + (r2[j] + r3[j]);
        }
        rows[i] = s0, rows[i + 1] = s1, rows[i + 2] = s2, rows[i + 3] = s3;
    }
    for (; i < h; ++i) {
        const float *r = xp + i * w;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (long j = 0; j < w; ++j) {
            s += r[j];
            cols[j] += r[j];
        }
        rows[i] = s;
    }
}
#endif

/* CA pooling: for each of `planes` h x w planes, the h row means then the w column means. */
void ca_pool(const float *R x, long planes, long h, long w, float *R out) {
    const float inv_w = 1.0f / (float)w, inv_h = 1.0f / (float)h;
    for (long p = 0; p < planes; ++p) {
        float *rows = out + p * (h + w), *cols = rows + h;
        for (long i = 0; i < h; ++i) rows[i] = 0.0f;
        row_col_sums(x + p * h * w, h, w, rows, cols);
        for (long i = 0; i < h; ++i) rows[i] *= inv_w;
        for (long j = 0; j < w; ++j) cols[j] *= inv_h;
    }
}

/* CA output: out[p, i, j] = x[p, i, j] * aw[p, j] * ah[p, i] (the paper's x * a_w * a_h), where each
 * plane's gates are g[p] = [ah (h values), aw (w values)]. */
#if defined(__AVX512F__)
/* As with the pooling: a plane's column gates stay in registers, short rows end in a masked store. */
void ca_apply(const float *R x, const float *R g, long planes, long h, long w, float *R out) {
    for (long p = 0; p < planes; ++p) {
        for (long j0 = 0; j0 < w; j0 += 64) {
            const Chunk ck = chunk64(w - j0 < 64 ? w - j0 : 64);
            const long nv = ck.nv;
            const __mmask16 k0 = ck.mask[0], k1 = ck.mask[1], k2 = ck.mask[2], k3 = ck.mask[3];
            const float *aw = g + p * (h + w) + h + j0;
            const __m512 g0 = _mm512_maskz_loadu_ps(k0, aw), g1 = nv > 1 ? _mm512_maskz_loadu_ps(k1, aw + 16) : g0,
                         g2 = nv > 2 ? _mm512_maskz_loadu_ps(k2, aw + 32) : g0,
                         g3 = nv > 3 ? _mm512_maskz_loadu_ps(k3, aw + 48) : g0;
            for (long i = 0; i < h; ++i) {
                const __m512 a = _mm512_set1_ps(g[p * (h + w) + i]);
                const float *r = x + (p * h + i) * w + j0;
                float *o = out + (p * h + i) * w + j0;
                _mm512_mask_storeu_ps(o, k0, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k0, r), g0), a));
                if (nv > 1) _mm512_mask_storeu_ps(o + 16, k1, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k1, r + 16), g1), a));
                if (nv > 2) _mm512_mask_storeu_ps(o + 32, k2, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k2, r + 32), g2), a));
                if (nv > 3) _mm512_mask_storeu_ps(o + 48, k3, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k3, r + 48), g3), a));
            }
        }
    }
}
#else
void ca_apply(const float *R x, const float *R g, long planes, long h, long w, float *R out) {
    for (long p = 0; p < planes; ++p) {
        const float *awp = g + p * (h + w) + h;
        for (long i = 0; i < h; ++i) {
            const float a = g[p * (h + w) + i];
            const float *r = x + (p * h + i) * w;
            float *o = out + (p * h + i) * w;
#pragma omp simd
            for (long j = 0; j < w; ++j) o[j] = r[j] * awp[j] * a;
        }
    }
}
#endif

/* out[r, t] = bias[r] + sum_k coef[r * cstride + k] * src[k * sstride + t] for r < rows, t < len: every
 * small matrix product of CA's gates (conv1 over the pooled map, conv_h and conv_w over its output). */
#if defined(__AVX512F__)
/* Up to 64 columns of an output row summed over all k in registers, one store each. */
static void dot_rows(const float *R src, long sstride, long kn, const float *R coef, long cstride,
                     const float *R bias, long rows, long len, float *R out, long ostride) {
    for (long r = 0; r < rows; ++r) {
        const float *cr = coef + r * cstride;
        for (long t0 = 0; t0 < len; t0 += 64) {
            const Chunk ck = chunk64(len - t0 < 64 ? len - t0 : 64);
            const long nv = ck.nv;
            const __mmask16 k0 = ck.mask[0], k1 = ck.mask[1], k2 = ck.mask[2], k3 = ck.mask[3];
            const __m512 b = _mm512_set1_ps(bias[r]);
            __m512 a0 = b, a1 = b, a2 = b, a3 = b;
            for (long k = 0; k < kn; ++k) {
                const __m512 wv = _mm512_set1_ps(cr[k]);
                const float *s = src + k * sstride + t0;
                a0 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(k0, s), a0);
                if (nv > 1) a1 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(k1, s + 16), a1);
                if (nv > 2) a2 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(k2, s + 32), a2);
                if (nv > 3) a3 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(k3, s + 48), a3);
            }
            float *o = out + r * ostride + t0;
            store64(o, ck, a0, a1, a2, a3);
        }
    }
}
#else
/* Four source rows per sweep of an output row: a quarter of the short loops and of its loads and stores. */
static void dot_rows(const float *R src, long sstride, long kn, const float *R coef, long cstride,
                     const float *R bias, long rows, long len, float *R out, long ostride) {
    for (long r = 0; r < rows; ++r) {
        const float *cr = coef + r * cstride;
        float *o = out + r * ostride;
        for (long t = 0; t < len; ++t) o[t] = bias[r];
        long k = 0;
        for (; k + 4 <= kn; k += 4) {
            const float *s0 = src + k * sstride, *s1 = s0 + sstride, *s2 = s1 + sstride, *s3 = s2 + sstride;
            const float c0 = cr[k], c1 = cr[k + 1], c2 = cr[k + 2], c3 = cr[k + 3];
#pragma omp simd
            for (long t = 0; t < len; ++t) o[t] += (c0 * s0[t] + c1 * s1[t]) + (c2 * s2[t] + c3 * s3[t]);
        }
        for (; k < kn; ++k) {
            const float *s = src + k * sstride;
            const float cf = cr[k];
#pragma omp simd
            for (long t = 0; t < len; ++t) o[t] += cf * s[t];
        }
    }
}
#endif

/* CA's gate logits from its pooled rows and columns y (n, c, L = h + w): z = hardswish(w1 y + b1)
 * (conv1 with BN folded in, mip outputs), then per channel wh z[:, :h] + bh and ww z[:, h:] + bw,
 * into g (n, c, L). The sigmoid is left to the caller (vectorized there). 1 if out of memory. */
int ca_gates(const float *R y, const float *R w1, const float *R b1, const float *R wh, const float *R bh,
             const float *R ww, const float *R bw, long n, long c, long mip, long h, long w, float *R g) {
    const long L = h + w;
    float *z = malloc(mip * L * sizeof(float));
    if (!z) return 1;
    for (long b = 0; b < n; ++b) {
        const float *yb = y + b * c * L;
        float *gb = g + b * c * L;
        dot_rows(yb, L, c, w1, c, b1, mip, L, z, L);  /* conv1, BN folded in */
#pragma omp simd
        for (long t = 0; t < mip * L; ++t) {  /* hardswish: z * relu6(z + 3) / 6 */
            const float r6 = z[t] + 3.0f < 0.0f ? 0.0f : z[t] + 3.0f > 6.0f ? 6.0f : z[t] + 3.0f;
            z[t] = z[t] * r6 / 6.0f;
        }
        dot_rows(z, L, mip, wh, mip, bh, c, h, gb, L);  /* conv_h on the row part */
        dot_rows(z + h, L, mip, ww, mip, bw, c, w, gb + h, L);  /* conv_w on the column part */
    }
    free(z);
    return 0;
}

static float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

/* Per plane mean over hw. */
static void plane_means(const float *R x, long planes, long hw, float *R mean) {
    for (long p = 0; p < planes; ++p) {
        const float *xp = x + p * hw;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (long q = 0; q < hw; ++q) s += xp[q];
        mean[p] = s / (float)hw;
    }
}

/* out = x * gate[plane], one scale per plane. */
static void plane_scale(const float *R x, const float *R gate, long planes, long hw, float *R out) {
    for (long p = 0; p < planes; ++p) {
        const float a = gate[p];
        const float *xp = x + p * hw;
        float *o = out + p * hw;
#pragma omp simd
        for (long q = 0; q < hw; ++q) o[q] = xp[q] * a;
    }
}

/* SE, whole: s = sigmoid(w2 relu(w1 mean(x))), w1 (hidden, c), w2 (c, hidden); out = x * s.
 * One call instead of eight library ops: on a 20x20 map their dispatch costs as much as the passes. */
int se_forward(const float *R x, const float *R w1, const float *R w2, long n, long c, long hidden, long hw,
               float *R out) {
    float *s = malloc((c + hidden) * sizeof(float)), *z = s + c;
    if (!s) return 1;
    for (long b = 0; b < n; ++b) {
        plane_means(x + b * c * hw, c, hw, s);
        for (long m = 0; m < hidden; ++m) {
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (long ch = 0; ch < c; ++ch) acc += w1[m * c + ch] * s[ch];
            z[m] = acc > 0.0f ? acc : 0.0f;
        }
        for (long ch = 0; ch < c; ++ch) {
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (long m = 0; m < hidden; ++m) acc += w2[ch * hidden + m] * z[m];
            s[ch] = sigmoid(acc);
        }
        plane_scale(x + b * c * hw, s, c, hw, out + b * c * hw);
    }
    free(s);
    return 0;
}

/* ECA, whole: s = sigmoid(conv1d_k(mean(x)) over channels, zero padding (k - 1) / 2); out = x * s. */
int eca_forward(const float *R x, const float *R weight, long k, long n, long c, long hw, float *R out) {
    const long r = (k - 1) / 2;
    float *s = malloc(2 * c * sizeof(float)), *gate = s + c;
    if (!s) return 1;
    for (long b = 0; b < n; ++b) {
        plane_means(x + b * c * hw, c, hw, s);
        for (long ch = 0; ch < c; ++ch) {
            float acc = 0.0f;
            for (long t = 0; t < k; ++t) {
                const long src = ch + t - r;
                if (src >= 0 && src < c) acc += weight[t] * s[src];
            }
            gate[ch] = sigmoid(acc);
        }
        plane_scale(x + b * c * hw, gate, c, hw, out + b * c * hw);
    }
    free(s);
    return 0;
}

/* Per plane mean and max: CBAM's channel descriptors (GAP and GMP). */
void plane_mean_max(const float *R x, long planes, long hw, float *R mean, float *R max) {
    for (long p = 0; p < planes; ++p) {
        const float *xp = x + p * hw;
        float s = 0.0f, m = xp[0];
#pragma omp simd reduction(+ : s) reduction(max : m)
        for (long q = 0; q < hw; ++q) {
            s += xp[q];
            m = xp[q] > m ? xp[q] : m;
        }
        mean[p] = s / (float)hw;
        max[p] = m;
    }
}

/* Over channels, per pixel: the sum and the max of x[ch, q] * m[ch] (CBAM's x1 = x * Mc, never stored). */
#if defined(__AVX512F__)
/* 128 pixels at a time, all channels deep, their running sums and maxima in 16 registers (kept in
 * memory they cost two loads and two stores per vector, three times the useful work). */
static void scaled_channel_sum_max(const float *R x, const float *R m, long c, long hw, float *R sum, float *R max) {
    for (long q0 = 0; q0 < hw; q0 += 128) {
        const long left = hw - q0;
        __mmask16 mk[8];
        for (int v = 0; v < 8; ++v) {
            const long n = left - 16 * v;
            mk[v] = (__mmask16)(n >= 16 ? 0xFFFFu : n <= 0 ? 0u : (1u << n) - 1u);
        }
        __m512 s[8], mx[8];
        const __m512 m0 = _mm512_set1_ps(m[0]);
        for (int v = 0; v < 8; ++v) s[v] = mx[v] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk[v], x + q0 + 16 * v), m0);
        for (long ch = 1; ch < c; ++ch) {
            const __m512 mc = _mm512_set1_ps(m[ch]);
            const float *row = x + ch * hw + q0;
            for (int v = 0; v < 8; ++v) {
                const __m512 val = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk[v], row + 16 * v), mc);
                s[v] = _mm512_add_ps(s[v], val);
                mx[v] = _mm512_max_ps(val, mx[v]);
            }
        }
        for (int v = 0; v < 8; ++v) {
            _mm512_mask_storeu_ps(sum + q0 + 16 * v, mk[v], s[v]);
            _mm512_mask_storeu_ps(max + q0 + 16 * v, mk[v], mx[v]);
        }
    }
}
#else
static void scaled_channel_sum_max(const float *R x, const float *R m, long c, long hw, float *R sum, float *R max) {
    for (long q0 = 0; q0 < hw; q0 += 256) { /* a block's running values stay in L1 */
        const long q1 = q0 + 256 < hw ? q0 + 256 : hw;
#pragma omp simd
        for (long q = q0; q < q1; ++q) sum[q] = max[q] = x[q] * m[0];
        for (long ch = 1; ch < c; ++ch) {
            const float mc = m[ch];
            const float *row = x + ch * hw;
#pragma omp simd
            for (long q = q0; q < q1; ++q) {
                const float v = row[q] * mc;
                sum[q] += v;
                max[q] = v > max[q] ? v : max[q];
            }
        }
    }
}
#endif

#if defined(__AVX512F__)
/* out (h x w) = the k x k convolution of pad (2 planes of ph x pw, zero borders of k / 2 and at
 * least 16 spare columns on the right, so every load is in bounds and unmasked). Up to 64 output
 * columns at a time sum all 2 k^2 taps in registers: one store per output, independent FMA chains. */
static void conv_2to1(const float *R pad, long ph, long pw, const float *R weight, long k, long h, long w,
                      float *R out) {
    for (long i = 0; i < h; ++i) {
        for (long j0 = 0; j0 < w; j0 += 64) {
            const Chunk ck = chunk64(w - j0 < 64 ? w - j0 : 64);
            const long nv = ck.nv;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (long ci = 0; ci < 2; ++ci) {
                for (long di = 0; di < k; ++di) {
                    const float *srow = pad + (ci * ph + i + di) * pw + j0;
                    const float *wrow = weight + (ci * k + di) * k;
                    for (long dj = 0; dj < k; ++dj) {
                        const __m512 wv = _mm512_set1_ps(wrow[dj]);
                        const float *s = srow + dj;
                        a0 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s), a0);
                        if (nv > 1) a1 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s + 16), a1);
                        if (nv > 2) a2 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s + 32), a2);
                        if (nv > 3) a3 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s + 48), a3);
                    }
                }
            }
            float *o = out + i * w + j0;
            store64(o, ck, a0, a1, a2, a3);
        }
    }
}
#else
/* Tap by tap: each adds a shifted row of the padded descriptor, so the inner loop runs along a row. */
static void conv_2to1(const float *R pad, long ph, long pw, const float *R weight, long k, long h, long w,
                      float *R out) {
    for (long q = 0; q < h * w; ++q) out[q] = 0.0f;
    for (long ci = 0; ci < 2; ++ci)
        for (long di = 0; di < k; ++di)
            for (long dj = 0; dj < k; ++dj) {
                const float wt = weight[(ci * k + di) * k + dj];
                for (long i = 0; i < h; ++i) {
                    float *o = out + i * w;
                    const float *s = pad + (ci * ph + i + di) * pw + dj;
#pragma omp simd
                    for (long j = 0; j < w; ++j) o[j] += wt * s[j];
                }
            }
}
#endif

/* CBAM spatial logits: desc = [mean_c, max_c] of x * mc (x1, never stored), then the k x k,
 * 2 -> 1 convolution with zero padding k / 2, into logits (n * h * w floats). 1 if out of memory. */
int cbam_logits(const float *R x, const float *R mc, const float *R weight, long n, long c, long h, long w,
                long k, float *R logits) {
    const long hw = h * w, r = k / 2, ph = h + 2 * r, pw = w + 2 * r + 16;
    float *avg = malloc((2 * hw + 2 * ph * pw) * sizeof(float));
    if (!avg) return 1;
    float *mx = avg + hw, *pad = mx + hw;
    memset(pad, 0, 2 * ph * pw * sizeof(float));  /* the borders stay zero: the convolution's padding */
    const float inv_c = 1.0f / (float)c;
    for (long b = 0; b < n; ++b) {
        scaled_channel_sum_max(x + b * c * hw, mc + b * c, c, hw, avg, mx);
        for (long i = 0; i < h; ++i) {
            float *pa = pad + (r + i) * pw + r, *pm = pad + (ph + r + i) * pw + r;
#pragma omp simd
            for (long j = 0; j < w; ++j) {
                pa[j] = avg[i * w + j] * inv_c;
                pm[j] = mx[i * w + j];
            }
        }
        conv_2to1(pad, ph, pw, weight, k, h, w, logits + b * hw);
    }
    free(avg);
    return 0;
}

/* CBAM output: out[b, ch, q] = (x[b, ch, q] * mc[b, ch]) * ms[b, q]. */
void cbam_apply(const float *R x, const float *R mc, const float *R ms, long n, long c, long hw, float *R out) {
    for (long b = 0; b < n; ++b) {
        const float *msb = ms + b * hw;
        for (long ch = 0; ch < c; ++ch) {
            const float m = mc[b * c + ch];
            const float *r = x + (b * c + ch) * hw;
            float *o = out + (b * c + ch) * hw;
#pragma omp simd
            for (long q = 0; q < hw; ++q) o[q] = (r[q] * m) * msb[q];
        }
    }
}
