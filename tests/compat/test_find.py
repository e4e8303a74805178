"""find / search through openviking-sdk 0.1.17: English, code and CJK corpora, scopes, filters."""
import pytest
from openviking_sdk.errors import InvalidArgumentError, PermissionDeniedError

ENGLISH = {
    "auth.md": "# Authentication\nClients authenticate with an API key sent in the X-API-Key header. "
    "Rotating keys regularly keeps accounts safe.",
    "storage.md": "# Storage\nFiles are written atomically to local disk or an S3 bucket; "
    "every write survives a crash.",
    "sessions.md": "# Sessions\nA session collects messages; committing it archives them and "
    "summarises the conversation.",
    "gardening.md": "# Gardening\nTomatoes need sunlight, water and patience.",
}
CODE = {
    "token.py": "def getUserToken(session):\n    return session.user_token\n",
    "parser.py": "def parse_http_header(raw_line):\n    name, value = raw_line.split(':', 1)\n",
    "retry.py": "class RetryPolicy:\n    max_attempts = 3\n    backoff_ms = 250\n",
}
CJK = {
    "auth-zh.md": "# 用户认证\n客户端通过 API 密钥进行身份认证，密钥需要定期轮换。",
    "storage-zh.md": "# 存储\n文件以原子方式写入本地磁盘或对象存储。",
    "login-ja.md": "# ログイン\nユーザーはパスワードでログインします。",
}


def first_uri(result):
    """The first file (level 2) hit. Folder summaries (L0/L1) written in the background after
    the writes are hits too (RETRIEVAL.md R2), so whether one ranks above a file depends on
    timing; the files' order does not."""
    hits = [h for h in result["memories"] + result["resources"] + result["skills"]
            if h["level"] == 2]
    assert hits, result
    return hits[0]["uri"]


@pytest.fixture(scope="module")
def corpus(tenant):
    bob = tenant["bob"]
    for folder, docs in (("en", ENGLISH), ("code", CODE), ("cjk", CJK)):
        for name, text in docs.items():
            bob.write(f"viking://resources/find/{folder}/{name}", text)
    bob.write("viking://user/bob/memories/prefs/editor.md", "Bob prefers the helix editor with a dark theme.")
    return bob


@pytest.mark.parametrize(
    "query,expected",
    [
        ("how do clients authenticate with an api key", "viking://resources/find/en/auth.md"),
        ("crash safe atomic writes", "viking://resources/find/en/storage.md"),
        ("commit a session archive", "viking://resources/find/en/sessions.md"),
        ("getUserToken", "viking://resources/find/code/token.py"),
        ("user token", "viking://resources/find/code/token.py"),
        ("parse_http_header", "viking://resources/find/code/parser.py"),
        ("http header parsing", "viking://resources/find/code/parser.py"),
        ("RetryPolicy backoff", "viking://resources/find/code/retry.py"),
        ("认证", "viking://resources/find/cjk/auth-zh.md"),
        ("对象存储", "viking://resources/find/cjk/storage-zh.md"),
        ("ログイン", "viking://resources/find/cjk/login-ja.md"),
    ],
)
def test_expected_document_first(corpus, query, expected):
    result = corpus.find(query, target_uri="viking://resources/find")
    assert first_uri(result) == expected, result
    for hit in result["resources"]:
        assert 0.0 <= hit["score"] <= 1.0
        assert hit["context_type"] == "resource"
        if hit["level"] != 2:
            suffix = "/.abstract.md" if hit["level"] == 0 else "/.overview.md"
            assert hit["level"] in (0, 1) and hit["uri"].endswith(suffix), hit
        assert hit["tags"] == [] and hit["relations"] == [] and "match_reason" in hit
    scores = [h["score"] for h in result["resources"]]
    assert scores == sorted(scores, reverse=True)


def test_search_keywords_and_semantic_fallback(corpus):
    r = corpus.search("tomatoes sunlight", options={"search_type": "keywords"})
    assert first_uri(r) == "viking://resources/find/en/gardening.md"
    r = corpus.search("tomatoes sunlight")
    hit = r["resources"][0]
    assert "no" in hit["match_reason"] and "embedding" in hit["match_reason"]


def test_default_scope_and_memories(corpus, tenant):
    r = corpus.find("helix editor")
    assert first_uri(r) == "viking://user/bob/memories/prefs/editor.md"
    assert r["memories"][0]["context_type"] == "memory"
    # alice (same account, other user) never sees bob's memories, but shares resources.
    alice = tenant["alice"]
    assert alice.find("helix editor")["total"] == 0
    assert alice.find("gardening tomatoes")["total"] >= 1
    with pytest.raises(PermissionDeniedError):
        alice.find("helix", target_uri="viking://user/bob")


def test_filters_limits_and_plain_text_queries(corpus):
    r = corpus.find("key", target_uri="viking://resources/find", limit=1)
    assert r["total"] == 1
    r = corpus.find("session", options={"context_type": "memory"})
    assert r["resources"] == []
    r = corpus.find('"AND" title:(x*) [y] OR', target_uri="viking://resources/find")
    assert isinstance(r["total"], int)
    with pytest.raises(InvalidArgumentError):
        corpus.find("")
    with pytest.raises(InvalidArgumentError):
        corpus.find("x" * 5000)
    r = corpus.find("key", options={"read_content": True}, target_uri="viking://resources/find/en")
    assert r["resources"][0]["content"] == ENGLISH["auth.md"]
