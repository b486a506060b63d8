// The one way the library includes Eigen. Eigen must not start threads of its own: the caller's thread count
// rules (see parallel_for). GCC 12 reports false -Wmaybe-uninitialized / -Wuninitialized warnings inside its
// own AVX-512 intrinsics when it inlines Eigen's kernels; they are silenced for Eigen's headers only.
#pragma once

#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/Dense>
#include <Eigen/SVD>
#pragma GCC diagnostic pop
