//! What `input()` reads in a notebook's kernel, as the trail keeps it: the answer to a password
//! prompt only as its length and SHA-256, whatever the prompt's size; any other answer whole,
//! as the code it may be (a pdb command runs Python).

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::code_audit::{close_code, kernel, read_until, reply_to};
use crate::support::http;
use crate::support::notebooks::direct_notebook_server;
use crate::support::server::{Server, eventually};

/// A cell that asks for input, in the legacy protocol.
fn asking(msg_id: &str, code: &str) -> Value {
    json!({ "channel": "shell", "header": { "msg_id": msg_id, "msg_type": "execute_request", "session": "s1", "username": "test",
        "version": "5.3", "date": "" }, "parent_header": {}, "metadata": {},
        "content": { "code": code, "silent": false, "store_history": true, "user_expressions": {}, "allow_stdin": true, "stop_on_error": true } })
}

/// Attack: a prompt over the 64 KiB the proxy reads of a kernel's frame (the user's own code
/// can print one) was not taken for a password prompt, and the password typed at it was
/// recorded in the clear.
#[test]
fn a_password_typed_at_any_prompt_is_recorded_as_its_length_and_hash_only() {
    let server = direct_notebook_server(&[]);
    let kernel = kernel(&server);
    let mut socket = channels(&kernel);
    // (cell, what it runs, what is typed, whether the kernel asks for a password). The long
    // prompt comes after one that asked for no password, as the proxy last read. The last two
    // are answered naming no prompt, as jupyter_client's `input` answers (every such answer
    // was dropped before, and the cell waited).
    let cases = [
        ("short", "import getpass; getpass.getpass('Password: ')", "hunter2-short-7f1c", true),
        ("plain", "input('Name: ')", "nora-answer-3c9b", false),
        ("long", "import getpass; getpass.getpass('P' * 100_000 + ': ')", "hunter2-long-8e2d", true),
        ("unnamed", "import getpass; getpass.getpass('Password: ')", "hunter2-unnamed-2a6f", true),
        ("unnamed-plain", "input('Name: ')", "nora-unnamed-5e81", false),
    ];
    for (cell, code, typed, password) in cases {
        send(&mut socket, asking(cell, code));
        let mut asked = prompt(&mut socket);
        assert_eq!(asked["content"]["password"], password, "{cell}: the kernel's prompt");
        if cell.starts_with("unnamed") {
            asked["header"] = json!({});
        }
        let answer = answer(&format!("{cell}-typed"), &asked, typed);
        send(&mut socket, answer);
        let reply = reply_to(&mut socket, cell, "execute_reply");
        assert_eq!(reply["content"]["status"], "ok", "{cell}: {reply}");
    }
    for (cell, typed) in [("short", "hunter2-short-7f1c"), ("long", "hunter2-long-8e2d"), ("unnamed", "hunter2-unnamed-2a6f")] {
        let record = typed_record(&server, "KernelInput", &format!("{cell}-typed"));
        let kept = &record["requestParameters"];
        assert_eq!(
            (kept["InputBytes"].as_u64(), kept["InputSha256"].as_str()),
            (Some(typed.len() as u64), Some(hex::encode(Sha256::digest(typed)).as_str()))
        );
    }
    for (cell, typed) in [("plain", "nora-answer-3c9b"), ("unnamed-plain", "nora-unnamed-5e81")] {
        let plain = typed_record(&server, "ExecuteCode", &format!("{cell}-typed"));
        assert_eq!(
            (plain["requestParameters"]["Kind"].as_str(), plain["requestParameters"]["Code"].as_str()),
            (Some("input_reply"), Some(typed))
        );
    }
    let lines = crate::support::trail::trail_lines(server.data_dir());
    for secret in ["hunter2-short-7f1c", "hunter2-long-8e2d", "hunter2-unnamed-2a6f"] {
        assert!(!lines.iter().any(|l| l.contains(secret)), "a password typed is in the trail: {secret}");
    }
}

/// Attacks (reviews): the password flag was set by any frame naming a prompt and never taken
/// back, and the kernel takes an answer from any socket, whatever it names. A prompt forged on
/// iopub by the user's code made the next answer (a pdb command or `input()` answer: Python,
/// run) go into the trail as a password's hash; so did an answer sent from another socket, sent
/// twice, or typed into the box of a password prompt that an interrupt had ended. Now only the
/// answer to the prompt this socket was sent, while it waits, goes on, once; any other is
/// dropped unsent and recorded as refused, its value kept as its hash only.
#[test]
fn only_the_answer_to_this_sockets_waiting_prompt_goes_on_and_only_once() {
    let server = direct_notebook_server(&[]);
    let kernel = kernel(&server);
    let (mut a, mut b) = (channels(&kernel), channels(&kernel));
    // The user's code forges a password prompt on iopub, which every socket hears.
    let forge = "k = get_ipython().kernel; k.session.send(k.iopub_socket, 'input_request', {'prompt': '', 'password': True})";
    send(&mut a, asking("forge", forge));
    assert_eq!(reply_to(&mut a, "forge", "execute_reply")["content"]["status"], "ok");
    // A real prompt, for no password, comes to a. b's answer to it is dropped; a's goes on.
    send(&mut a, asking("plain", "input('Code: ')"));
    let asked = prompt(&mut a);
    assert_eq!(asked["content"]["password"], false);
    send(&mut b, answer("stray-typed", &asked, "print('from-b-5d2a')"));
    typed_record(&server, "KernelMessageRefused", "stray-typed");
    send(&mut a, answer("plain-typed", &asked, "print('shown-code-1a2b')"));
    assert_eq!(reply_to(&mut a, "plain", "execute_reply")["content"]["status"], "ok");
    // A password prompt, answered twice: the first answer is the password; the second is
    // dropped.
    send(&mut a, asking("secret", "import getpass; getpass.getpass('Password: ')"));
    let asked = prompt(&mut a);
    send(&mut a, answer("secret-typed", &asked, "hunter2-twice-4b7e"));
    assert_eq!(reply_to(&mut a, "secret", "execute_reply")["content"]["status"], "ok");
    send(&mut a, answer("again-typed", &asked, "second-answer-9c1f"));
    typed_record(&server, "KernelMessageRefused", "again-typed");
    // A password prompt an interrupt ended: what is typed into its box afterwards is dropped.
    send(&mut a, asking("ended", "import getpass; getpass.getpass('Password: ')"));
    let asked = prompt(&mut a);
    let interrupted = send_http(&kernel, "POST", &format!("api/kernels/{}/interrupt", kernel.id));
    assert_eq!(interrupted, 204, "the interrupt");
    assert_eq!(reply_to(&mut a, "ended", "execute_reply")["content"]["status"], "error");
    send(&mut a, answer("late-typed", &asked, "print('late-code-77e0')"));
    typed_record(&server, "KernelMessageRefused", "late-typed");
    // The socket is still open, and still runs cells.
    send(&mut a, asking("after", "6*7"));
    assert_eq!(reply_to(&mut a, "after", "execute_reply")["content"]["status"], "ok");

    let code = typed_record(&server, "ExecuteCode", "plain-typed");
    assert_eq!(code["requestParameters"]["Code"], "print('shown-code-1a2b')", "{code}");
    let secret = typed_record(&server, "KernelInput", "secret-typed");
    assert_eq!(secret["requestParameters"]["InputSha256"], hex::encode(Sha256::digest("hunter2-twice-4b7e")));
    for (msg_id, typed) in
        [("stray-typed", "print('from-b-5d2a')"), ("again-typed", "second-answer-9c1f"), ("late-typed", "print('late-code-77e0')")]
    {
        let refused = typed_record(&server, "KernelMessageRefused", msg_id);
        assert_eq!(refused["requestParameters"]["InputSha256"], hex::encode(Sha256::digest(typed)), "{refused}");
    }
    let lines = crate::support::trail::trail_lines(server.data_dir());
    for kept_out in ["hunter2-twice-4b7e", "from-b-5d2a", "second-answer-9c1f", "late-code-77e0"] {
        assert!(!lines.iter().any(|l| l.contains(kept_out)), "`{kept_out}` is in the trail");
    }
}

/// Attacks (review): the kernel takes the next message on its stdin channel, of any type, for
/// the answer its prompt waits for, and the proxy passed any type but `input_reply` on
/// unrecorded (a pdb command so ran unseen); an `input_reply` on another channel spent the
/// prompt's one answer on nothing. And a prompt stayed waiting when the reply that ended it
/// was over 64 KiB (an error the user's code raised after an interrupt), so an answer to it
/// went into the trail as a password's hash.
#[test]
fn only_an_input_reply_goes_to_stdin_and_a_reply_of_any_size_ends_a_prompt() {
    let server = direct_notebook_server(&[]);
    let kernel = kernel(&server);
    let interrupt = || assert_eq!(send_http(&kernel, "POST", &format!("api/kernels/{}/interrupt", kernel.id)), 204, "the interrupt");
    // A cell's status once the kernel runs it: requests right after an interrupt's error are
    // aborted a moment, so it is asked again until one is not.
    let settled = |code: &str| {
        let mut socket = channels(&kernel);
        (0..50)
            .map(|n| {
                send(&mut socket, asking(&format!("settle-{n}"), code));
                let status = reply_to(&mut socket, &format!("settle-{n}"), "execute_reply")["content"]["status"].clone();
                std::thread::sleep(Duration::from_millis(100));
                status
            })
            .find(|status| status != "aborted")
            .expect("a cell ran")
    };
    // A message of another type on stdin, carrying a value, while input() waits: refused, and
    // the socket closes; the kernel never takes it (the cell ends by the interrupt, unanswered).
    let mut a = channels(&kernel);
    send(&mut a, asking("taken", "v = input('Code: ')"));
    let asked = prompt(&mut a);
    let mut other = answer("other-typed", &asked, "forged-value-6d3e");
    other["header"]["msg_type"] = json!("comm_msg");
    send(&mut a, other);
    assert_eq!(close_code(&mut a), Some(1008), "a message on stdin that is no input_reply");
    let refused = typed_record(&server, "KernelMessageRefused", "other-typed");
    assert_eq!(
        (refused["requestParameters"]["MsgType"].as_str(), refused["requestParameters"]["Channel"].as_str()),
        (Some("comm_msg"), Some("stdin"))
    );
    interrupt();
    assert_eq!(settled("assert 'v' not in globals(), 'taken'"), "ok", "the kernel took the forged message for the answer");
    // An input_reply on the shell channel: refused, not spent on a prompt.
    let mut b = channels(&kernel);
    send(&mut b, asking("shell", "w = input('Code: ')"));
    let asked = prompt(&mut b);
    let mut on_shell = answer("shell-typed", &asked, "shell-value-1c4f");
    on_shell["channel"] = json!("shell");
    send(&mut b, on_shell);
    assert_eq!(close_code(&mut b), Some(1008), "an input_reply on the shell channel");
    interrupt();
    assert_eq!(settled("1"), "ok");
    // A password prompt whose cell, interrupted, raises an error of 100 KB: its reply ends the
    // prompt, and what is typed into its box afterwards is dropped, not taken for a password.
    let mut c = channels(&kernel);
    let big = "import getpass\ntry:\n    getpass.getpass('Password: ')\nexcept KeyboardInterrupt:\n    raise ValueError('x' * 100_000)";
    send(&mut c, asking("big", big));
    let asked = prompt(&mut c);
    interrupt();
    let reply = reply_to(&mut c, "big", "execute_reply");
    assert_eq!((reply["content"]["status"].as_str(), reply["content"]["ename"].as_str()), (Some("error"), Some("ValueError")));
    send(&mut c, answer("after-big-typed", &asked, "print('after-big-2b9d')"));
    typed_record(&server, "KernelMessageRefused", "after-big-typed");
    assert!(
        !server.audit(&[("EventName", "KernelInput")]).iter().any(|r| r["requestParameters"]["MessageId"] == "after-big-typed"),
        "an answer to a prompt its reply had ended was taken for a password"
    );
    let lines = crate::support::trail::trail_lines(server.data_dir());
    for kept_out in ["forged-value-6d3e", "shell-value-1c4f", "after-big-2b9d"] {
        assert!(!lines.iter().any(|l| l.contains(kept_out)), "`{kept_out}` is in the trail");
    }
}

type Socket = tungstenite::WebSocket<std::net::TcpStream>;

/// A new connection to the kernel's channels, through the proxy.
fn channels(kernel: &crate::code_audit::Kernel) -> Socket {
    let path = format!("{}api/kernels/{}/channels", kernel.base, kernel.id);
    http::websocket(&kernel.at, &path, &kernel.cookie, None, Duration::from_secs(30)).expect("ws")
}

fn send(socket: &mut Socket, message: Value) {
    socket.send(tungstenite::Message::Text(message.to_string().into())).expect("send");
}

/// The next prompt the kernel sends this socket.
fn prompt(socket: &mut Socket) -> Value {
    read_until(socket, |m| m["header"]["msg_type"] == "input_request").pop().expect("the prompt")
}

/// A body-less request of the notebook's Jupyter, through the proxy: its status.
fn send_http(kernel: &crate::code_audit::Kernel, method: &str, rest: &str) -> u16 {
    crate::notebooks::send(&kernel.at, method, &format!("{}{rest}", kernel.base), &kernel.cookie, &json!({})).status
}

/// An answer to `asked`, in the legacy protocol, under message id `msg_id`.
fn answer(msg_id: &str, asked: &Value, typed: &str) -> Value {
    json!({ "channel": "stdin", "header": { "msg_id": msg_id, "msg_type": "input_reply", "session": "s1", "username": "test",
        "version": "5.3", "date": "" }, "parent_header": asked["header"], "metadata": {}, "content": { "value": typed } })
}

/// The `event` record of the answer sent as message `msg_id`.
fn typed_record(server: &Server, event: &str, msg_id: &str) -> Value {
    eventually(10, &format!("the {event} record of answer `{msg_id}`"), || {
        server.audit(&[("EventName", event)]).into_iter().find(|r| r["requestParameters"]["MessageId"] == msg_id)
    })
}
