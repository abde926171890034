/* Fused CPU inference passes for CA and CBAM (float32, contiguous NCHW, single thread).
 *
 * With library ops each gate costs several passes over the feature map (a pooling per direction or
 * statistic, a broadcast product per gate); on a 20x20 neck map every pass costs about what the
 * whole useful work does. Here each loop reads the map once and writes at most one output. The
 * small matrix products between the passes stay in PyTorch (attention/fused.py).
 * Inner loops run over contiguous memory so the compiler vectorizes them (built with -O3
 * -fopenmp-simd: the simd pragmas allow reordering of the float reductions, nothing else).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define R restrict /* no two arguments overlap: lets the compiler vectorize */

#if defined(__AVX512F__)
#include <immintrin.h>

/* Column sums stay in registers while the rows stream past (adding into memory row after row
 * chains every row on a store-to-load round trip), 64 columns at a time; each row's slice is added
 * up vertically, then horizontally once. rows must be zeroed; cols is written. */
static void row_col_sums(const float *R xp, long h, long w, float *R rows, float *R cols) {
    for (long j0 = 0; j0 < w; j0 += 64) {
        const long width = w - j0 < 64 ? w - j0 : 64;
        const long nv = (width + 15) / 16, tail = width - 16 * (nv - 1);  /* 1..16 columns in the last vector */
        const __mmask16 mt = (__mmask16)(tail == 16 ? 0xFFFFu : (1u << tail) - 1u);
        __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        for (long i = 0; i < h; ++i) {
            const float *r = xp + i * w + j0;
            __m512 v0, v1 = _mm512_setzero_ps(), v2 = v1, v3 = v1;
            v0 = _mm512_maskz_loadu_ps(nv == 1 ? mt : 0xFFFF, r);
            if (nv > 1) v1 = _mm512_maskz_loadu_ps(nv == 2 ? mt : 0xFFFF, r + 16);
            if (nv > 2) v2 = _mm512_maskz_loadu_ps(nv == 3 ? mt : 0xFFFF, r + 32);
            if (nv > 3) v3 = _mm512_maskz_loadu_ps(mt, r + 48);
            c0 = _mm512_add_ps(c0, v0), c1 = _mm512_add_ps(c1, v1);
            c2 = _mm512_add_ps(c2, v2), c3 = _mm512_add_ps(c3, v3);
            rows[i] += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(v0, v1), _mm512_add_ps(v2, v3)));
        }
        _mm512_mask_storeu_ps(cols + j0, nv == 1 ? mt : 0xFFFF, c0);
        if (nv > 1) _mm512_mask_storeu_ps(cols + j0 + 16, nv == 2 ? mt : 0xFFFF, c1);
        if (nv > 2) _mm512_mask_storeu_ps(cols + j0 + 32, nv == 3 ? mt : 0xFFFF, c2);
        if (nv > 3) _mm512_mask_storeu_ps(cols + j0 + 48, mt, c3);
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

/* CA output: out[p, i, j] = x[p, i, j] * aw[p, j] * ah[p, i] (the paper's x * a_w * a_h). */
#if defined(__AVX512F__)
/* As with the pooling: a plane's column gates stay in registers, short rows end in a masked store. */
void ca_apply(const float *R x, const float *R ah, const float *R aw, long planes, long h, long w, float *R out) {
    for (long p = 0; p < planes; ++p) {
        for (long j0 = 0; j0 < w; j0 += 64) {
            const long width = w - j0 < 64 ? w - j0 : 64;
            const long nv = (width + 15) / 16, tail = width - 16 * (nv - 1);
            const __mmask16 mt = (__mmask16)(tail == 16 ? 0xFFFFu : (1u << tail) - 1u);
            const __mmask16 m0 = nv == 1 ? mt : 0xFFFF, m1 = nv == 2 ? mt : 0xFFFF, m2 = nv == 3 ? mt : 0xFFFF;
            const float *g = aw + p * w + j0;
            const __m512 g0 = _mm512_maskz_loadu_ps(m0, g), g1 = nv > 1 ? _mm512_maskz_loadu_ps(m1, g + 16) : g0,
                         g2 = nv > 2 ? _mm512_maskz_loadu_ps(m2, g + 32) : g0,
                         g3 = nv > 3 ? _mm512_maskz_loadu_ps(mt, g + 48) : g0;
            for (long i = 0; i < h; ++i) {
                const __m512 a = _mm512_set1_ps(ah[p * h + i]);
                const float *r = x + (p * h + i) * w + j0;
                float *o = out + (p * h + i) * w + j0;
                _mm512_mask_storeu_ps(o, m0, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m0, r), g0), a));
                if (nv > 1) _mm512_mask_storeu_ps(o + 16, m1, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m1, r + 16), g1), a));
                if (nv > 2) _mm512_mask_storeu_ps(o + 32, m2, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m2, r + 32), g2), a));
                if (nv > 3) _mm512_mask_storeu_ps(o + 48, mt, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mt, r + 48), g3), a));
            }
        }
    }
}
#else
void ca_apply(const float *R x, const float *R ah, const float *R aw, long planes, long h, long w, float *R out) {
    for (long p = 0; p < planes; ++p) {
        const float *awp = aw + p * w;
        for (long i = 0; i < h; ++i) {
            const float a = ah[p * h + i];
            const float *r = x + (p * h + i) * w;
            float *o = out + (p * h + i) * w;
#pragma omp simd
            for (long j = 0; j < w; ++j) o[j] = r[j] * awp[j] * a;
        }
    }
}
#endif

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
            const long width = w - j0 < 64 ? w - j0 : 64;
            const long nv = (width + 15) / 16, tail = width - 16 * (nv - 1);
            const __mmask16 mt = (__mmask16)(tail == 16 ? 0xFFFFu : (1u << tail) - 1u);
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
            _mm512_mask_storeu_ps(o, nv == 1 ? mt : 0xFFFF, a0);
            if (nv > 1) _mm512_mask_storeu_ps(o + 16, nv == 2 ? mt : 0xFFFF, a1);
            if (nv > 2) _mm512_mask_storeu_ps(o + 32, nv == 3 ? mt : 0xFFFF, a2);
            if (nv > 3) _mm512_mask_storeu_ps(o + 48, mt, a3);
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
