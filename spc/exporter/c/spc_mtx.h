/* spc_mtx.h: a small Matrix Market reader and writer for spc's exported examples.
 *
 * Header only, C99 (also valid C++, so nvcc compiles it in a .cu file).
 * Reads "matrix coordinate" files (real, integer or pattern; general,
 * symmetric or skew-symmetric) and "matrix array" files (real or integer,
 * general), and converts them to CSR (rows sorted, duplicates summed, as
 * scipy's tocsr().sum_duplicates()) or to a dense row-major array.
 * Define SPC_INDEX (default int32_t) before including it to choose the type
 * of the CSR index arrays.
 */
#ifndef SPC_MTX_H
#define SPC_MTX_H

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SPC_INDEX
#define SPC_INDEX int32_t
#define SPC_INDEX_MAX INT32_MAX
#endif

/* A file's entries: coordinate (0-based row/col/val triples, symmetric ones
 * mirrored) or array (val only, rows * cols of them, column-major as stored). */
typedef struct {
    long long rows, cols, nnz;
    int is_array;
    long long *row, *col;
    double *val;
} spc_mtx;

typedef struct {            /* a CSR matrix: pos[rows + 1], crd[nnz], vals[nnz] */
    long long rows, cols, nnz;
    SPC_INDEX *pos, *crd;
    double *vals;
} spc_csr;

static void spc_mtx_free(spc_mtx *m) {
    free(m->row); free(m->col); free(m->val);
    m->row = m->col = NULL; m->val = NULL;
}

static void spc_csr_free(spc_csr *a) {
    free(a->pos); free(a->crd); free(a->vals);
    a->pos = a->crd = NULL; a->vals = NULL;
}

static void spc_lower(char *s) { for (; *s; ++s) *s = (char)tolower((unsigned char)*s); }

/* Read ``path`` into ``m``.  Returns 0, or prints why to stderr and returns 1. */
static int spc_mtx_read(const char *path, spc_mtx *m) {
    char line[1024], object[64], layout[64], field[64], symmetry[64];
    long long k, stored, r, c;
    int sym = 0, skew = 0, pattern = 0;
    FILE *f = fopen(path, "r");
    memset(m, 0, sizeof *m);
    if (!f) { fprintf(stderr, "%s: cannot open\n", path); return 1; }
    if (!fgets(line, sizeof line, f) ||
        sscanf(line, "%%%%MatrixMarket %63s %63s %63s %63s", object, layout, field, symmetry) != 4) {
        fprintf(stderr, "%s: not a Matrix Market file (no %%%%MatrixMarket header)\n", path);
        fclose(f); return 1;
    }
    spc_lower(object); spc_lower(layout); spc_lower(field); spc_lower(symmetry);
    if (strcmp(object, "matrix") != 0 || (strcmp(layout, "coordinate") != 0 && strcmp(layout, "array") != 0)
        || (strcmp(field, "real") != 0 && strcmp(field, "integer") != 0 && strcmp(field, "double") != 0
            && strcmp(field, "pattern") != 0)) {
        fprintf(stderr, "%s: %s %s %s is not supported (real, integer or pattern matrices)\n",
                path, object, layout, field);
        fclose(f); return 1;
    }
    sym = strcmp(symmetry, "symmetric") == 0;
    skew = strcmp(symmetry, "skew-symmetric") == 0;
    pattern = strcmp(field, "pattern") == 0;
    if (!sym && !skew && strcmp(symmetry, "general") != 0) {
        fprintf(stderr, "%s: symmetry '%s' is not supported\n", path, symmetry);
        fclose(f); return 1;
    }
    m->is_array = strcmp(layout, "array") == 0;
    if (m->is_array && pattern) {
        fprintf(stderr, "%s: an array file cannot be a pattern\n", path);
        fclose(f); return 1;
    }
    do {
        if (!fgets(line, sizeof line, f)) {
            fprintf(stderr, "%s: no size line\n", path); fclose(f); return 1;
        }
    } while (line[0] == '%' || line[strspn(line, " \t\r\n")] == '\0');
    if (m->is_array) {
        if (sscanf(line, "%lld %lld", &m->rows, &m->cols) != 2) {
            fprintf(stderr, "%s: bad size line\n", path); fclose(f); return 1;
        }
        if ((sym || skew) && m->rows != m->cols) {
            fprintf(stderr, "%s: a symmetric array must be square\n", path); fclose(f); return 1;
        }
        /* symmetric arrays store the lower triangle by columns (skew: without the diagonal) */
        stored = sym ? m->rows * (m->rows + 1) / 2 : skew ? m->rows * (m->rows - 1) / 2
                     : m->rows * m->cols;
    } else if (sscanf(line, "%lld %lld %lld", &m->rows, &m->cols, &stored) != 3) {
        fprintf(stderr, "%s: bad size line\n", path); fclose(f); return 1;
    }
    if (m->rows < 0 || m->cols < 0 || stored < 0) {
        fprintf(stderr, "%s: negative size\n", path); fclose(f); return 1;
    }
    m->nnz = 0;
    m->val = (double *)malloc(sizeof(double) * (size_t)(m->is_array ? m->rows * m->cols + 1
                                                        : (sym || skew ? 2 : 1) * stored + 1));
    if (!m->is_array) {
        m->row = (long long *)malloc(sizeof(long long) * (size_t)((sym || skew ? 2 : 1) * stored + 1));
        m->col = (long long *)malloc(sizeof(long long) * (size_t)((sym || skew ? 2 : 1) * stored + 1));
    }
    if (!m->val || (!m->is_array && (!m->row || !m->col))) {
        fprintf(stderr, "%s: out of memory\n", path); spc_mtx_free(m); fclose(f); return 1;
    }
    for (k = 0; k < stored; ++k) {
        double v = 1.0;
        if (m->is_array) {
            if (fscanf(f, "%lf", &v) != 1) break;
            m->val[m->nnz++] = v;
            continue;
        }
        if (fscanf(f, "%lld %lld", &r, &c) != 2 || (!pattern && fscanf(f, "%lf", &v) != 1)) break;
        if (r < 1 || r > m->rows || c < 1 || c > m->cols) {
            fprintf(stderr, "%s: entry %lld (%lld, %lld) is outside the %lld x %lld matrix\n",
                    path, k + 1, r, c, m->rows, m->cols);
            spc_mtx_free(m); fclose(f); return 1;
        }
        m->row[m->nnz] = r - 1; m->col[m->nnz] = c - 1; m->val[m->nnz++] = v;
        if ((sym || skew) && r != c) {
            m->row[m->nnz] = c - 1; m->col[m->nnz] = r - 1; m->val[m->nnz++] = skew ? -v : v;
        }
    }
    fclose(f);
    if (k != stored) {
        fprintf(stderr, "%s: %lld entries announced, %lld read\n", path, stored, k);
        spc_mtx_free(m); return 1;
    }
    if (m->is_array && (sym || skew)) {      /* unpack the triangle, last entry first */
        long long n = m->rows, c2, r2, at = stored;
        for (c2 = n - 1; c2 >= 0; --c2)
            for (r2 = n - 1; r2 >= c2 + (skew ? 1 : 0); --r2) m->val[c2 * n + r2] = m->val[--at];
        for (c2 = 0; c2 < n; ++c2) {
            if (skew) m->val[c2 * n + c2] = 0.0;
            for (r2 = c2 + 1; r2 < n; ++r2) m->val[r2 * n + c2] = skew ? -m->val[c2 * n + r2]
                                                                        : m->val[c2 * n + r2];
        }
        m->nnz = n * n;
    }
    return 0;
}

static int spc_entry_order(const void *a, const void *b) {
    const long long *x = (const long long *)a, *y = (const long long *)b;
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    if (x[1] != y[1]) return x[1] < y[1] ? -1 : 1;
    return x[2] < y[2] ? -1 : x[2] > y[2];      /* file order: sums in a fixed order */
}

/* The coordinate file ``m`` as CSR: rows sorted by column, duplicates summed.
 * Returns 0, or prints why and returns 1 (an array file, or too large for SPC_INDEX). */
static int spc_mtx_to_csr(const spc_mtx *m, spc_csr *a) {
    long long k, out = 0, *order;
    memset(a, 0, sizeof *a);
    if (m->is_array) { fprintf(stderr, "a sparse operand needs a coordinate file\n"); return 1; }
    if (m->nnz > (long long)SPC_INDEX_MAX || m->rows > (long long)SPC_INDEX_MAX
        || m->cols > (long long)SPC_INDEX_MAX) {
        fprintf(stderr, "matrix too large for this export's index type\n"); return 1;
    }
    a->rows = m->rows; a->cols = m->cols;
    order = (long long *)malloc(sizeof(long long) * 3 * (size_t)(m->nnz + 1));
    a->pos = (SPC_INDEX *)calloc((size_t)m->rows + 1, sizeof(SPC_INDEX));
    a->crd = (SPC_INDEX *)malloc(sizeof(SPC_INDEX) * (size_t)(m->nnz + 1));
    a->vals = (double *)malloc(sizeof(double) * (size_t)(m->nnz + 1));
    if (!order || !a->pos || !a->crd || !a->vals) {
        fprintf(stderr, "out of memory\n"); free(order); spc_csr_free(a); return 1;
    }
    for (k = 0; k < m->nnz; ++k) {
        order[3 * k] = m->row[k]; order[3 * k + 1] = m->col[k]; order[3 * k + 2] = k;
    }
    qsort(order, (size_t)m->nnz, 3 * sizeof(long long), spc_entry_order);
    for (k = 0; k < m->nnz; ++k) {
        long long r = order[3 * k], c = order[3 * k + 1];
        double v = m->val[order[3 * k + 2]];
        if (out > 0 && a->crd[out - 1] == c && k > 0 && order[3 * (k - 1)] == r) {
            a->vals[out - 1] += v;
            continue;
        }
        a->crd[out] = (SPC_INDEX)c; a->vals[out] = v; a->pos[r + 1]++; ++out;
    }
    for (k = 0; k < m->rows; ++k) a->pos[k + 1] += a->pos[k];
    a->nnz = out;
    free(order);
    return 0;
}

/* ``m`` as a dense row-major rows x cols array ``out`` (zeros where a
 * coordinate file stores nothing; duplicates summed). */
static void spc_mtx_to_dense(const spc_mtx *m, double *out) {
    long long k;
    if (m->is_array) {
        for (k = 0; k < m->nnz; ++k) out[(k % m->rows) * m->cols + k / m->rows] = m->val[k];
        return;
    }
    memset(out, 0, sizeof(double) * (size_t)(m->rows * m->cols));
    for (k = 0; k < m->nnz; ++k) out[m->row[k] * m->cols + m->col[k]] += m->val[k];
}

/* Write a dense row-major rows x cols array as a Matrix Market array file
 * (column-major, as the format stores it).  ``digits``: significant digits. */
static int spc_mtx_write_dense(FILE *f, long long rows, long long cols, const double *vals,
                               int digits) {
    long long r, c;
    fprintf(f, "%%%%MatrixMarket matrix array real general\n%lld %lld\n", rows, cols);
    for (c = 0; c < cols; ++c)
        for (r = 0; r < rows; ++r) fprintf(f, "%.*g\n", digits, vals[r * cols + c]);
    return ferror(f) ? 1 : 0;
}

/* Write CSR arrays (pos[rows + 1], crd, vals) as a Matrix Market coordinate file. */
static int spc_mtx_write_csr(FILE *f, long long rows, long long cols, const SPC_INDEX *pos,
                             const SPC_INDEX *crd, const double *vals, int digits) {
    long long r, p;
    fprintf(f, "%%%%MatrixMarket matrix coordinate real general\n%lld %lld %lld\n", rows, cols,
            rows > 0 ? (long long)pos[rows] : 0LL);
    for (r = 0; r < rows; ++r)
        for (p = pos[r]; p < pos[r + 1]; ++p)
            fprintf(f, "%lld %lld %.*g\n", r + 1, (long long)crd[p] + 1, digits, vals[p]);
    return ferror(f) ? 1 : 0;
}

#endif /* SPC_MTX_H */
