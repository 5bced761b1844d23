#include <aws/common/atomics.h>
#include <aws/common/task_scheduler.h>
#include <aws/io/event_loop.h>
#include <aws/io/retry_strategy.h>

#include "internal.hpp"

// One attempt, no retries. The CRT's own no-retry strategy refuses to hand out a token at all, and
// aws-c-s3 asks for one before the first attempt, so every request failed with "retry permission
// denied". This one hands out tokens and refuses only the retry, which makes aws-c-s3 report the
// attempt's own error (an untrusted certificate, a refused connection, a 500).

namespace s3torch {

namespace {

struct SingleAttemptStrategy {
  aws_retry_strategy base;
  aws_event_loop_group *elg;
};

struct SingleAttemptToken {
  aws_retry_token base;
  aws_task task;
  aws_retry_strategy_on_retry_token_acquired_fn *on_acquired;
  void *user_data;
};

void release_token(aws_retry_token *token) {
  aws_retry_strategy *strategy = token->retry_strategy;
  aws_mem_release(token->allocator, token->impl);
  aws_retry_strategy_release(strategy);
}

// Tokens are handed out from an event loop task, as the CRT's strategies do: never re-entrantly.
void deliver_token(aws_task *, void *arg, aws_task_status status) {
  auto *t = static_cast<SingleAttemptToken *>(arg);
  if (status == AWS_TASK_STATUS_RUN_READY) {
    t->on_acquired(t->base.retry_strategy, AWS_ERROR_SUCCESS, &t->base, t->user_data);
  } else {
    // Event loop shutting down: the consumer gets an error and no token; ours is dropped here.
    t->on_acquired(t->base.retry_strategy, AWS_ERROR_IO_OPERATION_CANCELLED, nullptr, t->user_data);
    aws_retry_token_release(&t->base);
  }
}

int acquire_token(aws_retry_strategy *strategy, const aws_byte_cursor *, aws_retry_strategy_on_retry_token_acquired_fn *on_acquired,
                  void *user_data, uint64_t) {
  auto *s = static_cast<SingleAttemptStrategy *>(strategy->impl);
  auto *t = static_cast<SingleAttemptToken *>(aws_mem_calloc(strategy->allocator, 1, sizeof(SingleAttemptToken)));
  t->base.allocator = strategy->allocator;
  t->base.retry_strategy = strategy;
  aws_atomic_init_int(&t->base.ref_count, 1);
  t->base.impl = t;
  t->on_acquired = on_acquired;
  t->user_data = user_data;
  aws_retry_strategy_acquire(strategy);
  aws_task_init(&t->task, deliver_token, t, "s3torch_single_attempt_token");
  aws_event_loop_schedule_task_now(aws_event_loop_group_get_next_loop(s->elg), &t->task);
  return AWS_OP_SUCCESS;
}

int schedule_retry(aws_retry_token *, aws_retry_error_type, aws_retry_strategy_on_retry_ready_fn *, void *) {
  return aws_raise_error(AWS_IO_MAX_RETRIES_EXCEEDED);
}

int record_success(aws_retry_token *) { return AWS_OP_SUCCESS; }

void destroy(aws_retry_strategy *strategy) {
  auto *s = static_cast<SingleAttemptStrategy *>(strategy->impl);
  aws_event_loop_group_release(s->elg);
  aws_mem_release(strategy->allocator, s);
}

aws_retry_strategy_vtable g_single_attempt_vtable = {destroy, acquire_token, schedule_retry, record_success,
                                                     release_token};

}  // namespace

aws_retry_strategy *new_single_attempt_strategy(aws_allocator *allocator, aws_event_loop_group *elg) {
  auto *s = static_cast<SingleAttemptStrategy *>(aws_mem_calloc(allocator, 1, sizeof(SingleAttemptStrategy)));
  s->base.allocator = allocator;
  s->base.vtable = &g_single_attempt_vtable;
  aws_atomic_init_int(&s->base.ref_count, 1);
  s->base.impl = s;
  s->elg = aws_event_loop_group_acquire(elg);
  return &s->base;
}

}  // namespace s3torch
