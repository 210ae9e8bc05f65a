#pragma once
// Attention's two products per head, Q Kᵀ and P V, as one BLAS call per (batch, head) matrix.
//
// Why: LibTorch built without MKL (Debian's) runs bmm as a serial loop over the batch, each product going through
// select and addmm with their checks and views: for bert-base at batch 16, 13,824 products a training step, under 1%
// of its FLOPs (bench_train_step --head-matmul torch|blas: 2 to 4 points of its ratio at sequence 32). Here each is
// one sgemm on the strided head views (no copies), small ones spread over the run's cores, and the context is
// written straight into the [batch, seq, heads × head_size] layout the output projection reads.
//
// Used where the host links a BLAS with sgemm (TWOSTAGE_HAVE_SGEMM) and the tensors are float32 on the CPU;
// otherwise torch::matmul, which LibTorch builds with MKL already run as batched products.
#include <torch/torch.h>

namespace ts {

// a · bᵀ (transpose_b) or a · b for every (batch, head): a is [B, H, m, k], b is [B, H, n, k] or [B, H, k, n].
// Returns [B, H, m, n]; with heads_last its memory is [B, m, H, n] (a permuted view), so that
// result.permute({0, 2, 1, 3}) is contiguous. Differentiable in a and b.
torch::Tensor head_matmul(const torch::Tensor& a, const torch::Tensor& b, bool transpose_b, bool heads_last = false);

// Whether head_matmul takes its BLAS path for these operands (tests, benchmarks).
bool head_matmul_uses_blas(const torch::Tensor& a, const torch::Tensor& b);

// c = op(a) · op(b) for every (batch, head), written into c, for kernels of their own (model/attention.h). a, b and
// c are [B, H, rows, cols] float32 CPU tensors whose rows have unit column stride (any row, head and batch strides:
// views into packed projections do); op transposes the last two dimensions where asked. With the BLAS path off
// (set_head_matmul_blas), torch::matmul computes it and c receives a copy.
void gemm_per_head(const torch::Tensor& a, bool transpose_a, const torch::Tensor& b, bool transpose_b,
                   const torch::Tensor& c);

// Off: torch::matmul always, to compare the two in one binary (benchmarks). On by default.
void set_head_matmul_blas(bool enabled);

}  // namespace ts
