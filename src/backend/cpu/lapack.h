// LAPACK's Fortran entry points, resolved from libopenblas itself (see CMakeLists.txt: we never
// link the generic liblapack, which may be the slow reference build). Column-major.
#pragma once

extern "C" {
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info);
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void spotri_(const char* uplo, const int* n, float* a, const int* lda, int* info);
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void ssyevd_(const char* jobz, const char* uplo, const int* n, float* a, const int* lda, float* w,
             float* work, const int* lwork, int* iwork, const int* liwork, int* info);
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda,
             double* w, double* work, const int* lwork, int* iwork, const int* liwork, int* info);
void dsyev_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
            double* work, const int* lwork, int* info);
void dsyevr_(const char* jobz, const char* range, const char* uplo, const int* n, double* a,
             const int* lda, const double* vl, const double* vu, const int* il, const int* iu,
             const double* abstol, int* m, double* w, double* z, const int* ldz, int* isuppz,
             double* work, const int* lwork, int* iwork, const int* liwork, int* info);
void sgesdd_(const char* jobz, const int* m, const int* n, float* a, const int* lda, float* s,
             float* u, const int* ldu, float* vt, const int* ldvt, float* work, const int* lwork,
             int* iwork, int* info);
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s,
             double* u, const int* ldu, double* vt, const int* ldvt, double* work,
             const int* lwork, int* iwork, int* info);
void sgesvd_(const char* jobu, const char* jobvt, const int* m, const int* n, float* a,
             const int* lda, float* s, float* u, const int* ldu, float* vt, const int* ldvt,
             float* work, const int* lwork, int* info);
void dgesvd_(const char* jobu, const char* jobvt, const int* m, const int* n, double* a,
             const int* lda, double* s, double* u, const int* ldu, double* vt, const int* ldvt,
             double* work, const int* lwork, int* info);
void sgelqf_(const int* m, const int* n, float* a, const int* lda, float* tau, float* work,
             const int* lwork, int* info);
void dgelqf_(const int* m, const int* n, double* a, const int* lda, double* tau, double* work,
             const int* lwork, int* info);
void sorglq_(const int* m, const int* n, const int* k, float* a, const int* lda, const float* tau,
             float* work, const int* lwork, int* info);
void dorglq_(const int* m, const int* n, const int* k, double* a, const int* lda,
             const double* tau, double* work, const int* lwork, int* info);
}

namespace lrq::cpu::lapack {

// Overloads so callers can be written once for float and double.
inline void potrf(const char* u, const int* n, float* a, const int* l, int* i) { spotrf_(u, n, a, l, i); }
inline void potrf(const char* u, const int* n, double* a, const int* l, int* i) { dpotrf_(u, n, a, l, i); }
inline void potri(const char* u, const int* n, float* a, const int* l, int* i) { spotri_(u, n, a, l, i); }
inline void potri(const char* u, const int* n, double* a, const int* l, int* i) { dpotri_(u, n, a, l, i); }
inline void syevd(const char* j, const char* u, const int* n, float* a, const int* l, float* w,
                  float* wk, const int* lw, int* iw, const int* liw, int* i) {
  ssyevd_(j, u, n, a, l, w, wk, lw, iw, liw, i);
}
inline void syevd(const char* j, const char* u, const int* n, double* a, const int* l, double* w,
                  double* wk, const int* lw, int* iw, const int* liw, int* i) {
  dsyevd_(j, u, n, a, l, w, wk, lw, iw, liw, i);
}
inline void gesdd(const char* j, const int* m, const int* n, float* a, const int* l, float* s,
                  float* u, const int* lu, float* vt, const int* lvt, float* wk, const int* lw,
                  int* iw, int* i) {
  sgesdd_(j, m, n, a, l, s, u, lu, vt, lvt, wk, lw, iw, i);
}
inline void gesdd(const char* j, const int* m, const int* n, double* a, const int* l, double* s,
                  double* u, const int* lu, double* vt, const int* lvt, double* wk, const int* lw,
                  int* iw, int* i) {
  dgesdd_(j, m, n, a, l, s, u, lu, vt, lvt, wk, lw, iw, i);
}
inline void gesvd(const char* ju, const char* jv, const int* m, const int* n, float* a,
                  const int* l, float* s, float* u, const int* lu, float* vt, const int* lvt,
                  float* wk, const int* lw, int* i) {
  sgesvd_(ju, jv, m, n, a, l, s, u, lu, vt, lvt, wk, lw, i);
}
inline void gesvd(const char* ju, const char* jv, const int* m, const int* n, double* a,
                  const int* l, double* s, double* u, const int* lu, double* vt, const int* lvt,
                  double* wk, const int* lw, int* i) {
  dgesvd_(ju, jv, m, n, a, l, s, u, lu, vt, lvt, wk, lw, i);
}
inline void gelqf(const int* m, const int* n, float* a, const int* l, float* t, float* w,
                  const int* lw, int* i) { sgelqf_(m, n, a, l, t, w, lw, i); }
inline void gelqf(const int* m, const int* n, double* a, const int* l, double* t, double* w,
                  const int* lw, int* i) { dgelqf_(m, n, a, l, t, w, lw, i); }
inline void orglq(const int* m, const int* n, const int* k, float* a, const int* l,
                  const float* t, float* w, const int* lw, int* i) { sorglq_(m, n, k, a, l, t, w, lw, i); }
inline void orglq(const int* m, const int* n, const int* k, double* a, const int* l,
                  const double* t, double* w, const int* lw, int* i) { dorglq_(m, n, k, a, l, t, w, lw, i); }

}  // namespace lrq::cpu::lapack
