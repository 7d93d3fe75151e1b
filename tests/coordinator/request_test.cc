#include "coordinator/request.h"

#include <gtest/gtest.h>

namespace tpserve {
namespace {

class RequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t =
        Tokenizer::LoadSentencePiece(std::string(TPSERVE_TEST_DATA) + "/tiny-mistral/tokenizer.model");
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
  }
  // Feeds the tokens of `text` one by one; returns the text emitted and the finish reason.
  std::pair<std::string, Finish> Feed(Request& r, const std::string& text) {
    std::string out;
    for (int32_t t : tokenizer_->Encode(text, false)) {
      RequestEvent e;
      Finish f = r.AcceptToken(t, nullptr, false, false, 1000, &e);
      out += e.text;
      if (f != Finish::kNone) return {out, f};
    }
    return {out + r.TakeHeldText(), Finish::kNone};
  }
  Request Make(std::vector<std::string> stop, int max_new = 1000) {
    Sequence s;
    s.prompt = {tokenizer_->bos_id()};
    s.stop.max_new_tokens = max_new;
    return Request("r", s, std::move(stop), tokenizer_.get());
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(RequestTest, TextStopsBeforeAStopStringSpreadOverSeveralTokens) {
  Request r = Make({"stop here"});
  auto [text, finish] = Feed(r, "hello there stop here and more");
  EXPECT_EQ(finish, Finish::kStop);
  EXPECT_EQ(text, "hello there ");
}

TEST_F(RequestTest, APossibleStopPrefixIsHeldBackThenReleased) {
  Request r = Make({"stop here"});
  auto [text, finish] = Feed(r, "we stop there");
  EXPECT_EQ(finish, Finish::kNone);
  EXPECT_EQ(text, "we stop there");  // "stop " was held while it could still match
}

TEST_F(RequestTest, WithoutStopStringsTheStreamIsTheDecodedText) {
  Request r = Make({});
  auto [text, finish] = Feed(r, "plain text, no stop");
  EXPECT_EQ(finish, Finish::kNone);
  EXPECT_EQ(text, "plain text, no stop");
}

TEST_F(RequestTest, LengthEosAndStopTokensEndTheRequest) {
  Request r = Make({}, 2);
  RequestEvent e;
  EXPECT_EQ(r.AcceptToken(5, nullptr, false, false, 1000, &e), Finish::kNone);
  EXPECT_EQ(r.AcceptToken(6, nullptr, false, false, 1000, &e), Finish::kLength);
  Request eos = Make({});
  EXPECT_EQ(eos.AcceptToken(2, nullptr, true, false, 1000, &e), Finish::kEos);
  Request stop_token = Make({});
  EXPECT_EQ(stop_token.AcceptToken(9, nullptr, false, true, 1000, &e), Finish::kStop);
  Request context = Make({});
  EXPECT_EQ(context.AcceptToken(9, nullptr, false, false, 2, &e), Finish::kLength);
}

TEST_F(RequestTest, EventsAreDeliveredInOrderAndNothingAfterTheFinalOne) {
  Request r = Make({});
  RequestEvent a, b, c;
  a.tokens = {1};
  b.finish = Finish::kLength;
  c.tokens = {3};
  r.Post(a);
  r.Post(b);
  r.Post(c);  // ignored: the request already ended
  bool done = false;
  std::vector<RequestEvent> got = r.Wait(10, &done);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].tokens, std::vector<int32_t>{1});
  EXPECT_EQ(got[1].finish, Finish::kLength);
  EXPECT_TRUE(done);
}

}  // namespace
}  // namespace tpserve
