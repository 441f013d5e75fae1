#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/seed-* from the project's fixtures: the
`configuration.value` JSON of every envoy/*.yaml, and small payloads taken from the unit
tests and tests/*.py (JSON-RPC requests, SSE streams of each LLM API, agent cards).
Run from anywhere: python3 fuzz/seeds.py. The output is checked in (a few kilobytes)."""
import json, pathlib, re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
SEP = b"\n@@\n"

def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())

def envoy_configs():
    """(file, filter root id, JSON text) of every `configuration.value: |` block."""
    out = []
    for f in sorted((ROOT / "envoy").glob("*.yaml")):
        lines = f.read_text().splitlines()
        root = None
        for i, line in enumerate(lines):
            m = re.search(r"root_id:\s*([\w.]+)", line)
            if m:
                root = m.group(1)
            if re.match(r"\s*value:\s*\|\s*$", line):
                indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
                block = []
                for l in lines[i + 1:]:
                    if l.strip() and len(l) - len(l.lstrip()) < indent:
                        break
                    block.append(l[indent:])
                text = "\n".join(block).strip()
                try:
                    json.loads(text)
                except ValueError:
                    continue
                out.append((f.stem, root or "", text))
    return out

def compact(obj):
    return json.dumps(obj, separators=(",", ":"))

def main():
    # ---- configurations (envoy/*.yaml) ----
    for stem, root, text in envoy_configs():
        layer = root.split(".")[-1] if root else ""
        if layer in ("llm", "mcp", "a2a"):
            put(f"config_{layer}", f"{stem}-{layer}", text)
    put("config_mcp", "empty", "")
    put("config_llm", "empty", "{}")
    put("config_a2a", "empty", "{}")

    # ---- JSON-RPC (unit tests, tests/test_mcp.py, tests/test_a2a.py) ----
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "query_db", "arguments": {"table": "orders"}}}
    rpc = {
        "call": compact(call),
        "notification": '{"jsonrpc":"2.0","method":"notifications/initialized"}',
        "batch": '[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/progress","params":{}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}]',
        "dup-tool": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","name":"admin_reset"}}',
        "escaped-key": '{"jsonrpc":"2.0","id":1,"method":"a","params":{"a\\u0062":1,"ab":2}}',
        "null-id": '{"jsonrpc":"2.0","id":null,"method":"tools/call"}',
        "response": '{"jsonrpc":"2.0","id":"a","result":{}}',
        "error": '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}',
        "surrogate": '{"jsonrpc":"2.0","method":"a","params":{"s":"\\ud83d\\ude00 \\" \\\\ \\n"}}',
        "big-number": '{"jsonrpc":"2.0","method":"a","params":{"n":1e400}}',
        "a2a-send": '{"jsonrpc":"2.0","id":"r1","method":"message/send","params":{"message":{"role":"user","messageId":"m1","contextId":"c1","parts":[{"kind":"text","text":"hi"}]}}}',
        "resource": '{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///data/x"}}',
        "prompt": '{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"greeting","arguments":{"who":"x"}}}',
    }
    for name, body in rpc.items():
        for t in ("jsonrpc", "mcp_message"):
            put(t, name, body)
    for name in ("call", "dup-tool", "escaped-key", "surrogate", "batch"):
        put("dup_keys", name, rpc[name])
    put("dup_keys", "many-keys", "{" + ",".join(f'"k{i}":{i}' for i in range(20)) + ',"k3":0}')

    # ---- JSON scanner ----
    put("json_scan", "task", b"\x00\x40" + b'{"jsonrpc":"2.0","id":"r1","result":{"kind":"task","id":"t1","contextId":"c1","status":{"state":"completed"},"n":[1,-2.5e3,true,null,"\\u00e9"]}}')
    put("json_scan", "split", b"\x07\xff" + rpc["batch"].encode())

    # ---- SSE streams of each API (unit tests of usage.rs, tests/test_llm.py) ----
    chat_sse = ('data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}\n\n'
                'data: {"choices":[{"index":0,"delta":{"content":"Hello there"}}],"usage":null}\n\n'
                'data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":1}}}\n\n'
                'data: [DONE]\n\n')
    responses_sse = ('event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hi \\"x\\""}\n\n'
                     'event: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":9,"output_tokens":4,"input_tokens_details":{"cached_tokens":2},"output_tokens_details":{"reasoning_tokens":1}}}}\n\n')
    anthropic_sse = ('event: message_start\r\ndata: {"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":1}}}\r\n\r\n'
                     'event: content_block_delta\r\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"Hello"}}\r\n\r\n'
                     ': ping\r\n\r\n'
                     'event: message_delta\r\ndata: {"type":"message_delta","usage":{"output_tokens":7}}\r\n\r\n')
    gemini_sse = ('data: {"candidates":[{"content":{"parts":[{"text":"Hi"}]}}],"usageMetadata":{"promptTokenCount":4}}\r\n\r\n'
                  'data: {"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"thoughtsTokenCount":1,"cachedContentTokenCount":1}}\r\n\r\n')
    gemini_array = ('[{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}]},\n'
                    '{"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2}}]')
    chat_json = '{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"a \\"usage\\": {} b"}}],"usage" : {"prompt_tokens":12,"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":4}}}'
    anthropic_json = '{"id":"msg","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":4}}'
    gemini_json = '{"candidates":[{"content":{"parts":[{"text":"Hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"toolUsePromptTokenCount":1}}'
    responses_json = '{"id":"r","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":9,"output_tokens":4}}'
    # llm_usage flags: api = bits 0-1 (chat, responses, anthropic, gemini), framing = bits 2-3 (json, sse, array).
    put("llm_usage", "chat-sse", b"\x04\x05" + chat_sse.encode())
    put("llm_usage", "responses-sse", b"\x05\x00" + responses_sse.encode())
    put("llm_usage", "anthropic-sse", b"\x06\xff" + anthropic_sse.encode())
    put("llm_usage", "gemini-sse", b"\x07\x09" + gemini_sse.encode())
    put("llm_usage", "gemini-array", b"\x0b\x03" + gemini_array.encode())
    put("llm_usage", "chat-json", b"\x00\x02" + chat_json.encode())
    put("llm_usage", "responses-json", b"\x01\x00" + responses_json.encode())
    put("llm_usage", "anthropic-json", b"\x02\x11" + anthropic_json.encode())
    put("llm_usage", "gemini-json", b"\x03\x00" + gemini_json.encode())
    put("sse", "chat", b"\x03\x20" + chat_sse.encode())
    put("sse", "anthropic-crlf", b"\x01\x08" + anthropic_sse.encode())
    put("sse", "cr-only", b"\x00\x02" + b"data:x\r\revent:y\rdata:z\r\rid: 7\ndata: a\ndata: b\n\n")
    put("sse", "mcp", b"\xff\x40" + b'id: 1\nevent: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"add"}]}}\n\n')

    # ---- MCP lists (listfilter.rs unit tests, tests/test_mcp.py) ----
    tools = '{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"add","inputSchema":{"type":"object"}},{"name":"admin_reset","x":[1,2]},{"name":"echo"}],"nextCursor":"abc","_meta":{"k":1}}}'
    prompts = '{"jsonrpc":"2.0","id":8,"result":{"prompts":[{"name":"greeting"},{"name":"audit"}]}}'
    resources = '{"jsonrpc":"2.0","id":9,"result":{"resources":[{"uri":"file:///data/a"},{"uri":"afile"}],"resourceTemplates":[{"uriTemplate":"a/{x}"}]}}'
    tool_result = '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"3 rows"}],"isError":false}}'
    for i, (name, text) in enumerate([("tools", tools), ("prompts", prompts), ("resources", resources), ("tool-result", tool_result), ("error", '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}')]):
        put("mcp_list", name, bytes([i]) + text.encode())

    # ---- a whole MCP exchange: flags, split, body, Mcp-Method, Mcp-Name, response ----
    def ex(flags, split, body, method="", name="", response=""):
        return bytes([flags, split]) + SEP.join(x.encode() for x in (body, method, name, response))
    put("mcp_exchange", "list-json", ex(2, 0, '{"jsonrpc":"2.0","id":7,"method":"tools/list"}', response=tools))
    put("mcp_exchange", "list-sse", ex(6, 9, '{"jsonrpc":"2.0","id":7,"method":"tools/list"}', response="event: message\ndata: " + tools + "\n\n"))
    put("mcp_exchange", "call", ex(2, 0, compact(call), response=tool_result.replace('"id":1', '"id":1')))
    put("mcp_exchange", "denied", ex(2, 0, '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query_db","arguments":{"table":"users"}}}'))
    put("mcp_exchange", "batch", ex(1, 3, rpc["batch"], response="[" + tools + "," + tool_result.replace('"id":1', '"id":2') + "]"))
    put("mcp_exchange", "routing-headers", ex(0x43, 0, '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}', "tools/call", "=?base64?YWRk?=", tool_result))
    put("mcp_exchange", "get-stream", ex(0x3d, 5, "", response="data: " + prompts + "\n\n"))

    # ---- A2A: flags, path, body ----
    a2a_bodies = {"send": rpc["a2a-send"], "cancel": '{"jsonrpc":"2.0","id":2,"method":"CancelTask","params":{"id":"t1"}}',
                  "response": rpc["response"], "batch": '[' + rpc["a2a-send"] + ']'}
    paths = ["/agents/echo/", "/agents/echo/.well-known/agent-card.json", "/t1/v1/tasks/abc:cancel", "/tasks/t%3Acancel", "/v1/message:send", "/agents/x/tasks/1/pushNotificationConfigs/2"]
    for i, p in enumerate(paths):
        body = list(a2a_bodies.values())[i % len(a2a_bodies)]
        put("a2a_classify", f"path{i}", bytes([i]) + p.encode() + SEP + body.encode())
    card03 = '{"name":"echo","url":"http://10.0.0.5:9101/","additionalInterfaces":[{"url":"http://10.0.0.5:9101/","transport":"JSONRPC"}],"version":"1"}'
    card10 = '{"name":"echo","supportedInterfaces":[{"url":"http://10.1.2.3:9000/","protocolBinding":"JSONRPC","protocolVersion":"1.0"}]}'
    signed = '{"name":"s","url":"http://10.0.0.5:9101/","signatures":[{"protected":"x","signature":"y"}]}'
    ext = '{"jsonrpc":"2.0","id":1,"result":' + card10 + '}'
    for i, (name, card) in enumerate([("card03", card03), ("card10", card10), ("signed", signed), ("extended", ext)]):
        flags = [0, 3, 4, 8][i]
        put("a2a_card", name, bytes([flags]) + SEP.join([b"gw:10000", b"/agents/echo/", b"/", card.encode()]))

    # ---- trace: flags, traceparent, tracestate, key ----
    put("trace", "valid", b"\x07" + SEP.join([b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", b"tollgate"]))
    put("trace", "future", b"\x02" + SEP.join([b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what", b"a=1", b"a"]))
    put("trace", "zero", b"\x05" + SEP.join([b" 00-00000000000000000000000000000000-00f067aa0ba902b7-01 ", b"", b"k"]))

if __name__ == "__main__":
    main()
