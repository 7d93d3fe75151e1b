// The C++ SDK against an in-process fake Inference service (plus gRPC's built-in health
// service): every field crosses the wire both ways, errors keep their code and message,
// deadlines and stream cancellation reach the server, and one Client serves many threads.
#include "clients/cpp/client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "tpserve/v1/inference.grpc.pb.h"

namespace tpserve::client {
namespace {

namespace pb = ::tpserve::v1;

// Answers from the request alone, so a test can predict every field.
class FakeInference final : public pb::Inference::Service {
 public:
  grpc::Status Generate(grpc::ServerContext* context, const pb::GenerateRequest* request,
                        pb::GenerateResponse* response) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_ = *request;
    }
    if (request->prompt() == "fail") {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prompt: refused by the fake");
    }
    if (request->prompt() == "slow") {
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!context->IsCancelled() && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      cancelled_ = context->IsCancelled();
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    response->set_request_id(request->request_id());
    // Tokens: the prompt ids reversed, or the prompt's bytes.
    if (request->prompt_token_ids_size() > 0) {
      for (int i = request->prompt_token_ids_size() - 1; i >= 0; --i) {
        response->add_token_ids(request->prompt_token_ids(i));
      }
    } else {
      for (unsigned char c : request->prompt()) response->add_token_ids(c);
    }
    response->set_text(request->prompt() + "!");
    for (uint32_t i = 0; i < request->logprobs(); ++i) {
      pb::TokenLogprob* lp = response->add_logprobs();
      lp->set_token_id(100 + i);
      lp->set_logprob(-0.5f * static_cast<float>(i));
      pb::TopLogprob* top = lp->add_top();
      top->set_token_id(7);
      top->set_logprob(-0.25f);
    }
    response->set_finish_reason(pb::FINISH_REASON_STOP);
    response->set_prompt_tokens(static_cast<uint32_t>(response->token_ids_size()));
    response->set_generated_tokens(request->max_new_tokens());
    return grpc::Status::OK;
  }

  // One chunk per token: token i, text "<i>"; the last carries finish_reason LENGTH.
  grpc::Status GenerateStream(grpc::ServerContext* context, const pb::GenerateRequest* request,
                              grpc::ServerWriter<pb::GenerateResponse>* writer) override {
    for (uint32_t i = 0; i < request->max_new_tokens(); ++i) {
      if (context->IsCancelled()) {
        cancelled_ = true;
        return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      }
      pb::GenerateResponse chunk;
      chunk.set_request_id(request->request_id());
      chunk.add_token_ids(i);
      chunk.set_text("<" + std::to_string(i) + ">");
      chunk.set_generated_tokens(i + 1);
      if (i + 1 == request->max_new_tokens()) chunk.set_finish_reason(pb::FINISH_REASON_LENGTH);
      writer->Write(chunk);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return grpc::Status::OK;
  }

  grpc::Status Tokenize(grpc::ServerContext*, const pb::TokenizeRequest* request,
                        pb::TokenizeResponse* response) override {
    if (request->add_bos()) response->add_token_ids(1);
    for (unsigned char c : request->text()) response->add_token_ids(c);
    return grpc::Status::OK;
  }

  grpc::Status GetModelInfo(grpc::ServerContext*, const pb::GetModelInfoRequest*, pb::ModelInfo* m) override {
    m->set_name("fake");
    m->set_architecture("MistralForCausalLM");
    m->set_num_layers(48);
    m->set_hidden_size(4096);
    m->set_num_heads(32);
    m->set_num_kv_heads(8);
    m->set_vocab_size(32000);
    m->set_max_context(4096);
    m->set_sliding_window(4096);
    m->set_bos_token_id(1);
    m->add_eos_token_ids(2);
    m->add_eos_token_ids(3);
    m->set_fingerprint("abc123");
    return grpc::Status::OK;
  }

  grpc::Status GetClusterStatus(grpc::ServerContext*, const pb::GetClusterStatusRequest*,
                                pb::ClusterStatus* s) override {
    pb::ReplicaStatus* r = s->add_replicas();
    r->set_name("r0");
    r->set_state(pb::REPLICA_STATE_SERVING);
    r->set_tensor_parallel(2);
    r->set_pipeline_parallel(3);
    r->set_kv_blocks_total(100);
    r->set_kv_blocks_free(60);
    r->set_kv_block_size(16);
    r->set_running_requests(4);
    r->set_queued_requests(5);
    r->set_backend("cuda");
    s->add_replicas()->set_name("r1");  // state left unset
    s->set_queued_requests(9);
    return grpc::Status::OK;
  }

  pb::GenerateRequest last() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }
  std::atomic<bool> cancelled_{false};

 private:
  std::mutex mu_;
  pb::GenerateRequest last_;
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    address_ = "127.0.0.1:" + std::to_string(port);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(address_, 10000);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }
  void TearDown() override {
    client_.reset();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  FakeInference service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, GenerateSendsEveryOptionAndReadsEveryField) {
  GenerateOptions o;
  o.request_id = "req-1";
  o.prompt = "ignored";
  o.prompt_token_ids = {5, 6, 7};
  o.max_new_tokens = 9;
  o.temperature = 0.25f;
  o.top_p = 0.5f;
  o.top_k = 11;
  o.min_p = 0.125f;
  o.repetition_penalty = 1.5f;
  o.seed = 0;  // set, and zero: must reach the server as a present seed
  o.stop = {"a", "b"};
  o.stop_token_ids = {2, 3};
  o.ignore_eos = true;
  o.logprobs = 2;
  o.prompt_logprobs = 1;
  absl::StatusOr<GenerateResult> r = client_->Generate(o);
  ASSERT_TRUE(r.ok()) << r.status();
  const pb::GenerateRequest sent = service_.last();
  EXPECT_EQ(sent.request_id(), "req-1");
  EXPECT_EQ(std::vector<uint32_t>(sent.prompt_token_ids().begin(), sent.prompt_token_ids().end()),
            o.prompt_token_ids);
  EXPECT_EQ(sent.max_new_tokens(), 9u);
  EXPECT_FLOAT_EQ(sent.temperature(), 0.25f);
  EXPECT_FLOAT_EQ(sent.top_p(), 0.5f);
  EXPECT_EQ(sent.top_k(), 11u);
  EXPECT_FLOAT_EQ(sent.min_p(), 0.125f);
  EXPECT_FLOAT_EQ(sent.repetition_penalty(), 1.5f);
  EXPECT_TRUE(sent.has_seed());
  EXPECT_EQ(sent.seed(), 0u);
  ASSERT_EQ(sent.stop_size(), 2);
  EXPECT_EQ(sent.stop(1), "b");
  EXPECT_EQ(sent.stop_token_ids_size(), 2);
  EXPECT_TRUE(sent.ignore_eos());
  EXPECT_EQ(sent.logprobs(), 2u);
  EXPECT_EQ(sent.prompt_logprobs(), 1u);

  EXPECT_EQ(r->request_id, "req-1");
  EXPECT_EQ(r->token_ids, (std::vector<uint32_t>{7, 6, 5}));
  EXPECT_EQ(r->text, "ignored!");
  EXPECT_EQ(r->finish_reason, FinishReason::kStop);
  EXPECT_EQ(FinishReasonName(r->finish_reason), "stop");
  EXPECT_EQ(r->prompt_tokens, 3u);
  EXPECT_EQ(r->generated_tokens, 9u);
  ASSERT_EQ(r->logprobs.size(), 2u);
  EXPECT_EQ(r->logprobs[1].token_id, 101u);
  EXPECT_FLOAT_EQ(r->logprobs[1].logprob, -0.5f);
  ASSERT_EQ(r->logprobs[1].top.size(), 1u);
  EXPECT_EQ(r->logprobs[1].top[0].token_id, 7u);
}

TEST_F(ClientTest, UnsetSeedStaysUnsetOnTheWire) {
  GenerateOptions o;
  o.prompt = "hi";
  ASSERT_TRUE(client_->Generate(o).ok());
  EXPECT_FALSE(service_.last().has_seed());
  EXPECT_EQ(service_.last().max_new_tokens(), 16u);  // the documented default
}

TEST_F(ClientTest, ServerErrorKeepsItsCodeAndMessage) {
  GenerateOptions o;
  o.prompt = "fail";
  absl::StatusOr<GenerateResult> r = client_->Generate(o);
  EXPECT_EQ(r.status(), absl::InvalidArgumentError("prompt: refused by the fake"));
}

TEST_F(ClientTest, DeadlineIsDeadlineExceededAndTheServerSeesTheCancel) {
  GenerateOptions o;
  o.prompt = "slow";
  o.timeout_ms = 100;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<GenerateResult> r = client_->Generate(o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  for (int i = 0; i < 200 && !service_.cancelled_; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(service_.cancelled_);
}

TEST_F(ClientTest, StreamDeliversEveryChunkInOrderThenOk) {
  GenerateOptions o;
  o.prompt = "x";
  o.max_new_tokens = 5;
  std::vector<StreamChunk> chunks;
  absl::Status s = client_->Stream(o, [&](const StreamChunk& c) {
    chunks.push_back(c);
    return true;
  });
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(chunks.size(), 5u);
  std::string text;
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i].token_ids, std::vector<uint32_t>{static_cast<uint32_t>(i)});
    EXPECT_EQ(chunks[i].generated_tokens, i + 1);
    text += chunks[i].text;
  }
  EXPECT_EQ(text, "<0><1><2><3><4>");
  EXPECT_EQ(chunks[3].finish_reason, FinishReason::kUnspecified);
  EXPECT_EQ(chunks[4].finish_reason, FinishReason::kLength);
}

TEST_F(ClientTest, StreamStoppedByTheCallbackIsOkAndCancelledOnTheServer) {
  GenerateOptions o;
  o.prompt = "x";
  o.max_new_tokens = 5000;  // 10 s of chunks unless cancelled
  int seen = 0;
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = client_->Stream(o, [&](const StreamChunk&) { return ++seen < 3; });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(seen, 3);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  for (int i = 0; i < 200 && !service_.cancelled_; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(service_.cancelled_);
}

TEST_F(ClientTest, TokenizeModelInfoAndClusterStatusCarryEveryField) {
  absl::StatusOr<std::vector<uint32_t>> ids = client_->Tokenize("AB", true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<uint32_t>{1, 65, 66}));

  absl::StatusOr<ModelInfo> m = client_->GetModelInfo();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->name, "fake");
  EXPECT_EQ(m->architecture, "MistralForCausalLM");
  EXPECT_EQ(m->num_layers, 48u);
  EXPECT_EQ(m->hidden_size, 4096u);
  EXPECT_EQ(m->num_heads, 32u);
  EXPECT_EQ(m->num_kv_heads, 8u);
  EXPECT_EQ(m->vocab_size, 32000u);
  EXPECT_EQ(m->max_context, 4096u);
  EXPECT_EQ(m->sliding_window, 4096u);
  EXPECT_EQ(m->bos_token_id, 1u);
  EXPECT_EQ(m->eos_token_ids, (std::vector<uint32_t>{2, 3}));
  EXPECT_EQ(m->fingerprint, "abc123");

  absl::StatusOr<ClusterStatus> s = client_->GetClusterStatus();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->replicas.size(), 2u);
  const ReplicaStatus& r = s->replicas[0];
  EXPECT_EQ(r.name, "r0");
  EXPECT_EQ(r.state, "SERVING");
  EXPECT_EQ(r.tensor_parallel, 2u);
  EXPECT_EQ(r.pipeline_parallel, 3u);
  EXPECT_EQ(r.kv_blocks_total, 100u);
  EXPECT_EQ(r.kv_blocks_free, 60u);
  EXPECT_EQ(r.kv_block_size, 16u);
  EXPECT_EQ(r.running_requests, 4u);
  EXPECT_EQ(r.queued_requests, 5u);
  EXPECT_EQ(r.backend, "cuda");
  EXPECT_EQ(s->replicas[1].state, "UNSPECIFIED");
  EXPECT_EQ(s->queued_requests, 9u);
}

TEST_F(ClientTest, HealthFollowsTheServerAndNamesUnknownServices) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  ASSERT_NE(health, nullptr);
  EXPECT_EQ(client_->Health().value_or("error"), "SERVING");
  health->SetServingStatus("tpserve.v1.Inference", false);
  EXPECT_EQ(client_->Health("tpserve.v1.Inference").value_or("error"), "NOT_SERVING");
  EXPECT_EQ(client_->Health("no.such.Service").value_or("error"), "SERVICE_UNKNOWN");
}

TEST_F(ClientTest, ManyThreadsShareOneClient) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        GenerateOptions o;
        o.prompt_token_ids = {static_cast<uint32_t>(t), static_cast<uint32_t>(i)};
        absl::StatusOr<GenerateResult> r = client_->Generate(o);
        if (r.ok() &&
            r->token_ids == std::vector<uint32_t>{static_cast<uint32_t>(i), static_cast<uint32_t>(t)}) {
          ++ok;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok, 16 * 20);
}

TEST(ClientConnectTest, BadArgumentsAreInvalidArgument) {
  EXPECT_EQ(Client::Connect("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Client::Connect("127.0.0.1:1", -1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ClientConnectTest, UnreachableServerIsUnavailableOnTheFirstCall) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect("127.0.0.1:1", 5000);
  ASSERT_TRUE(client.ok());  // lazy: nothing dialled yet
  EXPECT_EQ((*client)->Health().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*client)->Generate({}).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tpserve::client
