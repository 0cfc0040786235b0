// The launch side of cuda_emulation.h: runs one kernel entry over a grid of blocks, each block's
// threads as fibers switched at __syncthreads. Included once at the end of each emulated module,
// after the kernel file; lines CPT_EMU_ENTRY(name) then export, per entry,
//   int cpt_emu_launch_<name>(unsigned grid, unsigned block, const void* const* args)
//     args[i] points at the i-th argument's value (a pointer, long long, double or float), in the
//     entry's parameter order; returns 0, or 1 when the launch broke a CUDA rule (cpt_emu_error()).
//   const char* cpt_emu_signature_<name>()
//     the entry's C++ parameter kinds, one letter each: p pointer, q long long, Q unsigned long
//     long, i int, I unsigned, f float, d double, b bool.
#pragma once
#include <omp.h>
#include <ucontext.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// Switching fibers: on x86-64 a hand-written switch of the callee-saved registers (nanoseconds;
// glibc's swapcontext makes a sigprocmask system call per switch, which made the emulated suites
// many times slower); elsewhere ucontext. The x87 and SSE control words are not switched: no kernel
// changes rounding or precision modes.
#if defined(__x86_64__)
extern "C" void cpt_emu_swap(void** save_sp, void* load_sp);
__asm__(
    ".text\n.globl cpt_emu_swap\n.type cpt_emu_swap,@function\ncpt_emu_swap:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
    ".size cpt_emu_swap, .-cpt_emu_swap\n");
#define CPT_EMU_FAST_SWITCH 1
#else
#define CPT_EMU_FAST_SWITCH 0
#endif

namespace cpt_emu {

// per host thread: the block it is running (its fibers and the scheduler's saved state)
struct Team {
  std::vector<Fiber*> fibers;
  std::vector<unsigned> order;
  void* scheduler_sp = nullptr;
  ucontext_t scheduler;
};
thread_local Team team;

std::mutex error_lock;
std::string error_text;

void report(const std::string& what) {
  std::lock_guard<std::mutex> guard(error_lock);
  if (error_text.empty()) error_text = what;
}

inline void to_scheduler(Fiber* f) {
#if CPT_EMU_FAST_SWITCH
  cpt_emu_swap(&f->sp, *f->scheduler_sp);
#else
  swapcontext(static_cast<ucontext_t*>(f->context), &team.scheduler);
#endif
}

inline void to_fiber(Fiber* f) {
#if CPT_EMU_FAST_SWITCH
  cpt_emu_swap(f->scheduler_sp, f->sp);
#else
  swapcontext(&team.scheduler, static_cast<ucontext_t*>(f->context));
#endif
}

void syncthreads() {
  Fiber* f = self();
  f->state = AT_BARRIER;
  to_scheduler(f);
}

void trampoline() {
  Fiber* f = self();
  f->body(f->arg);
  f->state = DONE;
#if CPT_EMU_FAST_SWITCH
  to_scheduler(f);                  // never resumed
  std::abort();
#endif                              // ucontext: returning resumes uc_link, the scheduler
}

Fiber* new_fiber() {
  char* stack = static_cast<char*>(std::aligned_alloc(STACK_BYTES, STACK_BYTES));
  Fiber* f = new Fiber();
  f->stack = stack;
  *fiber_slot(reinterpret_cast<unsigned long>(stack)) = f;          // where self() reads it
#if !CPT_EMU_FAST_SWITCH
  f->context = new ucontext_t;
#endif
  return f;
}

void start(Fiber& f) {
#if CPT_EMU_FAST_SWITCH
  // the frame cpt_emu_swap pops: r15 r14 r13 r12 rbx rbp, then the "return address" trampoline,
  // entered with the stack aligned as after a call; it starts below the fiber slot (64-aligned)
  std::uintptr_t top = reinterpret_cast<std::uintptr_t>(fiber_slot(reinterpret_cast<unsigned long>(f.stack)));
  void** sp = reinterpret_cast<void**>(top - 8 - 7 * 8);   // after the ret, rsp = top - 8 = 8 (mod 16)
  for (int i = 0; i < 6; ++i) sp[i] = nullptr;
  sp[6] = reinterpret_cast<void*>(&trampoline);
  sp[7] = nullptr;
  f.sp = sp;
#else
  ucontext_t* c = static_cast<ucontext_t*>(f.context);
  getcontext(c);
  c->uc_stack.ss_sp = f.stack;                      // below the fiber pointer
  c->uc_stack.ss_size = STACK_BYTES - 64 * 33;
  c->uc_link = &team.scheduler;
  makecontext(c, trampoline, 0);
#endif
}

// The order the threads of a block run in between barriers: a scramble, so that code which reads
// another thread's write without a barrier gets the stale value for some thread pairs. Its starting
// point changes with every launch and block (`offset`), as the order of a GPU's warps does: atomics
// then add in another order on every run, and a test of run-to-run reproducibility can fail.
std::vector<unsigned> scrambled_order(unsigned n, unsigned long long offset) {
  std::vector<unsigned> order(n);
  unsigned step = 97;
  auto gcd = [](unsigned a, unsigned b) { while (b) { unsigned t = a % b; a = b; b = t; } return a; };
  while (n > 1 && gcd(step, n) != 1) step += 2;
  for (unsigned i = 0; i < n; ++i) order[i] = (unsigned)(((unsigned long long)i * step + n / 2 + offset) % n);
  return order;
}

std::atomic<unsigned long long> launches{0};

void run_block(cpt_emu_dim3 bid, cpt_emu_dim3 bdim, cpt_emu_dim3 gdim, void (*body)(void*), void* arg,
               unsigned long long launch) {
  const unsigned n = bdim.x;
  Team& team = cpt_emu::team;       // one thread-local lookup, not one per use
  while (team.fibers.size() < n) team.fibers.push_back(new_fiber());
  team.order = scrambled_order(n, launch * 2654435761ull + bid.x * 40503ull);
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = *team.fibers[t];
    f.tid = cpt_emu_dim3{t, 0, 0};
    f.bid = bid;
    f.bdim = bdim;
    f.gdim = gdim;
    f.state = RUNNABLE;
    f.body = body;
    f.arg = arg;
    f.scheduler_sp = &team.scheduler_sp;
    start(f);
  }
  for (;;) {
    for (unsigned i = 0; i < n; ++i) {
      Fiber* f = team.fibers[team.order[i]];
      if (f->state == RUNNABLE) to_fiber(f);
    }
    unsigned waiting = 0, done = 0;
    for (unsigned t = 0; t < n; ++t) (team.fibers[t]->state == DONE ? done : waiting) += 1;
    if (waiting == 0) return;
    if (done > 0) {
      report("__syncthreads reached by " + std::to_string(waiting) + " threads of block " +
             std::to_string(bid.x) + " while " + std::to_string(done) + " had returned");
      return;     // the waiting fibers are abandoned; their stacks are reused by the next block
    }
    for (unsigned t = 0; t < n; ++t) team.fibers[t]->state = RUNNABLE;
  }
}

template <typename F>
int run_grid(unsigned grid, unsigned block, F& body) {
  if (grid == 0 || block == 0 || block > 1024) {
    report("launch with grid " + std::to_string(grid) + " x block " + std::to_string(block) +
           " (CUDA needs 1 <= block <= 1024 and grid >= 1)");
    return 1;
  }
  auto call = [](void* p) { (*static_cast<F*>(p))(); };
  const cpt_emu_dim3 bdim{block, 1, 1}, gdim{grid, 1, 1};
  const unsigned long long launch = launches++;
#pragma omp parallel for schedule(dynamic)
  for (long long b = 0; b < (long long)grid; ++b)
    run_block(cpt_emu_dim3{(unsigned)b, 0, 0}, bdim, gdim, call, &body, launch);
  std::lock_guard<std::mutex> guard(error_lock);
  return error_text.empty() ? 0 : 1;
}

template <typename A> constexpr char kind() {
  return std::is_pointer<A>::value ? 'p'
       : std::is_same<A, long long>::value ? 'q'
       : std::is_same<A, unsigned long long>::value ? 'Q'
       : std::is_same<A, int>::value ? 'i'
       : std::is_same<A, unsigned>::value ? 'I'
       : std::is_same<A, float>::value ? 'f'
       : std::is_same<A, double>::value ? 'd'
       : std::is_same<A, bool>::value ? 'b' : '?';
}

template <typename... A> std::string signature(void (*)(A...)) {
  return std::string{kind<typename std::decay<A>::type>()...};
}

template <typename... A, std::size_t... I>
void call_with(void (*f)(A...), const void* const* args, std::index_sequence<I...>) {
  f(*static_cast<const typename std::decay<A>::type*>(args[I])...);
}

template <typename... A>
int launch(void (*f)(A...), unsigned grid, unsigned block, const void* const* args) {
  auto body = [&]() { call_with(f, args, std::index_sequence_for<A...>{}); };
  return run_grid(grid, block, body);
}

}  // namespace cpt_emu

extern "C" const char* cpt_emu_error() { return cpt_emu::error_text.c_str(); }
extern "C" void cpt_emu_clear_error() {
  std::lock_guard<std::mutex> guard(cpt_emu::error_lock);
  cpt_emu::error_text.clear();
}

#define CPT_EMU_ENTRY(name)                                                                     \
  extern "C" int cpt_emu_launch_##name(unsigned grid, unsigned block, const void* const* args) { \
    return cpt_emu::launch(&name, grid, block, args);                                           \
  }                                                                                             \
  extern "C" const char* cpt_emu_signature_##name() {                                          \
    static const std::string s = cpt_emu::signature(&name);                                     \
    return s.c_str();                                                                           \
  }
