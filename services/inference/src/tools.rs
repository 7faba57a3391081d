//! Tool calls and JSON output: the request's tools become a JSON Schema, the schema a llama.cpp
//! grammar (GBNF), so that the output always parses and matches; and the tools are described to
//! the model in the system prompt.

use ming_schemas::inference::{ChatRequest, ToolCall, ToolChoice};
use ming_schemas::{ErrorBody, ErrorCode};
use serde_json::{json, Value};

/// What the request needs beyond plain generation.
#[derive(Debug, Default)]
pub struct Constraint {
    /// GBNF grammar the output must follow (root rule `root`).
    pub grammar: Option<String>,
    /// Text added to the system prompt (tool descriptions and how to call them).
    pub system_addendum: Option<String>,
    /// The answer is a tool call to parse.
    pub expects_tool_call: bool,
    /// How every output the grammar allows begins (`{"name": "`, or up to the arguments' `{`
    /// when one tool is forced). The engine puts it into the prompt, where it is computed in one
    /// batch, instead of decoding it token by token; it leads the reply's text.
    pub forced: String,
    /// Outputs whose continuation is known once the model has written enough of them: when
    /// the output so far is a prefix of `text` at least `from` bytes long, the rest of `text`
    /// is the only thing the grammar allows next (up to whitespace, taken as the model writes
    /// it). The engine computes that rest in one batch instead of decoding it token by token
    /// ("jump forward"): once the model has named its tool, `", "parameters": {"first_key":`.
    pub jumps: Vec<Jump>,
    /// Each callable tool's required argument keys, in the grammar's order: after the comma
    /// that ends one of them, the next key is the only continuation (`, "label":`).
    pub keys: Vec<(String, Vec<String>)>,
}

impl Constraint {
    /// What the grammar alone allows after `text` (the output so far), when that is known and
    /// worth computing at once: the rest of a [`Jump`], or the next required argument's key.
    pub fn continuation(&self, text: &str) -> Option<String> {
        if let Some(j) = self
            .jumps
            .iter()
            .find(|j| text.len() >= j.from && text.len() < j.text.len() && j.text.starts_with(text))
        {
            return Some(j.text[text.len()..].to_string());
        }
        self.next_key(text)
    }

    /// After `{"name": "<tool>", "parameters": {…,` the next required key of that tool, less
    /// what of it the model already wrote.
    fn next_key(&self, text: &str) -> Option<String> {
        let rest = text.strip_prefix("{\"name\": \"")?;
        let (name, rest) = rest.split_once('"')?;
        let keys = &self.keys.iter().find(|(n, _)| n == name)?.1;
        let body = rest.strip_prefix(", \"parameters\": {")?;
        let (mut depth, mut in_string, mut escaped) = (0i32, false, false);
        let (mut commas, mut last_comma) = (0usize, None);
        for (i, c) in body.char_indices() {
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_string = true,
                '{' | '[' => depth += 1,
                '}' | ']' if depth == 0 => return None, // the arguments are closed
                '}' | ']' => depth -= 1,
                ',' if depth == 0 => {
                    commas += 1;
                    last_comma = Some(i);
                }
                _ => {}
            }
        }
        let written = &body[last_comma? + 1..];
        // Inside a string only when it is the key being written after that comma.
        let writing_key =
            written.trim_start().starts_with('"') && written.matches('"').count() == 1;
        if depth != 0 || (in_string && !writing_key) {
            return None;
        }
        let key = keys.get(commas)?;
        let full = format!(" {}:", Value::from(key.as_str()));
        full.strip_prefix(written)
            .filter(|rest| !rest.is_empty())
            .map(str::to_string)
    }
}

/// A known continuation: see [`Constraint::jumps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    pub text: String,
    pub from: usize,
}

/// The schema's required property keys in the order llama.cpp's grammar writes them: the
/// properties' own order, required ones first.
fn required_keys(schema: &Value) -> Vec<String> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema["properties"]
        .as_object()
        .map(|p| {
            p.keys()
                .filter(|k| required.contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// How the arguments of a tool call begin, as llama.cpp's grammar writes them: `{` and, when the
/// schema requires properties, the first of them — the converter puts required properties first,
/// in the schema's key order — with its colon. The value's own first token is left to the model
/// (`: "` and `: 6` are single tokens it would not split).
fn arguments_start(schema: &Value) -> String {
    match required_keys(schema).first() {
        Some(k) => format!("{{{}:", Value::from(k.as_str())),
        None => "{".into(),
    }
}

fn bad(msg: String) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRequest, msg)
}

/// Builds the grammar and prompt addendum for a request's tools or response format.
///
/// # Errors
/// `BadRequest` for a tool without a name, duplicate names, a schema that is not a JSON object,
/// an unknown tool in `tool_choice`, a required call with no tools, both tools and a response
/// format, or a schema llama.cpp cannot turn into a grammar.
pub fn constraint(req: &ChatRequest) -> Result<Constraint, ErrorBody> {
    let mut schemas = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in &req.tools {
        if t.name.is_empty() {
            return Err(bad("a tool has an empty name".into()));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(bad(format!("tool `{}` is listed twice", t.name)));
        }
        let schema: Value = serde_json::from_str(&t.parameters).map_err(|e| {
            bad(format!(
                "parameters of tool `{}` are not valid JSON: {e}",
                t.name
            ))
        })?;
        if !schema.is_object() {
            return Err(bad(format!(
                "parameters of tool `{}` must be a JSON Schema object",
                t.name
            )));
        }
        schemas.push((t, schema));
    }
    let calls: Vec<&(&ming_schemas::inference::Tool, Value)> = match &req.tool_choice {
        ToolChoice::None => Vec::new(),
        ToolChoice::Required if schemas.is_empty() => {
            return Err(bad(
                "tool_choice is `required` but the request lists no tools".into(),
            ));
        }
        ToolChoice::Required => schemas.iter().collect(),
        ToolChoice::Tool(name) => {
            let found: Vec<_> = schemas.iter().filter(|(t, _)| &t.name == name).collect();
            if found.is_empty() {
                return Err(bad(format!(
                    "tool_choice names `{name}`, which is not among the tools"
                )));
            }
            found
        }
    };
    if !calls.is_empty() && req.response_format.is_some() {
        return Err(bad(
            "a request cannot both require a tool call and set response_format".into(),
        ));
    }
    if !calls.is_empty() {
        let variants: Vec<Value> = calls
            .iter()
            .map(|(t, s)| {
                // llama.cpp's converter emits properties in key order: "name" < "parameters",
                // so the tool is chosen first and its arguments follow under its own schema.
                json!({
                    "type": "object",
                    "properties": { "name": { "const": t.name }, "parameters": s },
                    "required": ["name", "parameters"],
                    "additionalProperties": false
                })
            })
            .collect();
        let schema = if variants.len() == 1 {
            variants[0].clone()
        } else {
            json!({ "oneOf": variants })
        };
        // Every listed tool is described, whichever the choice allows (as with OpenAI's
        // `tool_choice`): the system prompt then stays the same from one request to the next,
        // so its cached KV state is reused when a caller forces one tool; the grammar holds the
        // output to the chosen one.
        let mut text = String::from(
            "You can act by calling one of these tools. Answer with a single JSON object \
             {\"name\": <tool name>, \"parameters\": {...}} and nothing else.\nTools:\n",
        );
        for (t, s) in &schemas {
            text.push_str(&format!(
                "- {}: {}\n  arguments schema: {}\n",
                t.name, t.description, s
            ));
        }
        let opening = |name: &str, schema: &Value| {
            format!(
                "{{\"name\": {}, \"parameters\": {}",
                Value::from(name),
                arguments_start(schema)
            )
        };
        let forced = "{\"name\": \"".to_string();
        let (forced, jumps) = if let ToolChoice::Tool(name) = &req.tool_choice {
            text.push_str(&format!("Call `{name}`.\n"));
            let schema = calls.first().map_or(&Value::Null, |(_, s)| s);
            (opening(name, schema), Vec::new())
        } else {
            // Once the model has written a tool's whole name (and no other tool's name goes on
            // from there), the grammar allows one continuation up to the first argument's value.
            let jumps = calls
                .iter()
                .map(|(t, s)| {
                    let extended = calls
                        .iter()
                        .any(|(o, _)| o.name != t.name && o.name.starts_with(&t.name));
                    Jump {
                        from: forced.len() + t.name.len() + usize::from(extended),
                        text: opening(&t.name, s),
                    }
                })
                .collect();
            (forced, jumps)
        };
        return Ok(Constraint {
            grammar: Some(grammar_for(&schema.to_string())?),
            system_addendum: Some(text),
            expects_tool_call: true,
            forced,
            jumps,
            keys: calls
                .iter()
                .map(|(t, s)| (t.name.clone(), required_keys(s)))
                .collect(),
        });
    }
    if let Some(format) = &req.response_format {
        let schema: Value = serde_json::from_str(format)
            .map_err(|e| bad(format!("response_format is not valid JSON: {e}")))?;
        if !schema.is_object() {
            return Err(bad("response_format must be a JSON Schema object".into()));
        }
        return Ok(Constraint {
            grammar: Some(grammar_for(format)?),
            system_addendum: Some(format!(
                "Answer with JSON that matches this schema: {schema}"
            )),
            expects_tool_call: false,
            forced: String::new(),
            jumps: Vec::new(),
            keys: Vec::new(),
        });
    }
    Ok(Constraint::default())
}

fn grammar_for(schema: &str) -> Result<String, ErrorBody> {
    llama_cpp_2::json_schema_to_grammar(schema).map_err(|e| {
        bad(format!(
            "the JSON Schema cannot be turned into a grammar: {e}"
        ))
    })
}

/// Reads a tool call from constrained output.
///
/// # Errors
/// When the text is not a complete call (generation was cut short).
pub fn parse_call(text: &str) -> Result<ToolCall, String> {
    let v: Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("not a complete JSON call: {e}"))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or("no tool name")?
        .to_string();
    let arguments = v.get("parameters").ok_or("no parameters")?.to_string();
    Ok(ToolCall { name, arguments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ming_schemas::inference::{ChatMessage, Tool};

    fn req(tools: Vec<Tool>, choice: ToolChoice) -> ChatRequest {
        let mut r = ChatRequest::new(vec![ChatMessage::new("user", "hi")]);
        r.tools = tools;
        r.tool_choice = choice;
        r
    }

    fn timer() -> Tool {
        Tool {
            name: "set_timer".into(),
            description: "Start a countdown".into(),
            parameters: r#"{"type":"object","properties":{"minutes":{"type":"integer"}},"required":["minutes"]}"#.into(),
        }
    }

    #[test]
    fn required_call_gets_a_grammar_and_a_description() {
        let c = constraint(&req(vec![timer()], ToolChoice::Required)).unwrap();
        assert!(c.grammar.as_ref().unwrap().contains("root ::="));
        assert_eq!(c.forced, "{\"name\": \"");
        assert!(c.system_addendum.unwrap().contains("set_timer"));
        assert!(c.expects_tool_call);
        // Integer ranges (the agent's timer: 1 s to 30 days) become part of the grammar.
        let mut ranged = timer();
        ranged.parameters = r#"{"type":"object","properties":{"minutes":{"type":"integer","minimum":1,"maximum":43200}},"required":["minutes"]}"#.into();
        let g = constraint(&req(vec![ranged], ToolChoice::Required))
            .unwrap()
            .grammar
            .unwrap();
        assert!(g.contains("root ::="), "{g}");
        assert_ne!(g, c.grammar.clone().unwrap_or_default());
    }

    #[test]
    fn a_forced_tool_keeps_every_description_and_only_its_grammar() {
        let mut note = timer();
        note.name = "add_note".into();
        note.parameters =
            r#"{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}"#
                .into();
        let all = constraint(&req(vec![timer(), note.clone()], ToolChoice::Required)).unwrap();
        let forced = constraint(&req(
            vec![timer(), note],
            ToolChoice::Tool("add_note".into()),
        ))
        .unwrap();
        let (a, f) = (
            all.system_addendum.unwrap(),
            forced.system_addendum.unwrap(),
        );
        // The same prompt, plus which tool to call: the cached prefix holds.
        assert!(f.starts_with(&a), "{f}");
        assert!(f.ends_with("Call `add_note`.\n"), "{f}");
        // Everything up to the arguments is known before the model runs.
        assert_eq!(
            forced.forced,
            r#"{"name": "add_note", "parameters": {"text":"#
        );
        assert!(forced.jumps.is_empty());
        // Choosing among tools, the rest is known once a name is written in full.
        let j = &all.jumps;
        assert_eq!(j.len(), 2);
        assert_eq!(
            j[0].text,
            r#"{"name": "set_timer", "parameters": {"minutes":"#
        );
        assert_eq!(&j[0].text[..j[0].from], r#"{"name": "set_timer"#);
        assert_eq!(&j[1].text[..j[1].from], r#"{"name": "add_note"#);
        let g = forced.grammar.unwrap();
        assert!(g.contains("add_note") && !g.contains("set_timer"), "{g}");
        assert!(all.grammar.unwrap().contains("set_timer"));
    }

    #[test]
    fn arguments_start_at_the_first_required_key_and_names_that_go_on_wait_for_their_quote() {
        let mut list = timer();
        list.name = "list".into();
        list.parameters = r#"{"type":"object","properties":{"day":{"type":"string"}}}"#.into();
        let mut lists = list.clone();
        lists.name = "list_all".into();
        let c = constraint(&req(vec![list, lists], ToolChoice::Required)).unwrap();
        // No required argument: only the brace is known.
        assert_eq!(c.jumps[0].text, r#"{"name": "list", "parameters": {"#);
        // "list" may go on as "list_all": the jump waits for the closing quote.
        assert_eq!(&c.jumps[0].text[..c.jumps[0].from], r#"{"name": "list""#);
        assert_eq!(&c.jumps[1].text[..c.jumps[1].from], r#"{"name": "list_all"#);
        // Required properties come first, in the schema's key order.
        let s = json!({"type": "object", "properties": {"b": {}, "a": {}, "c": {}}, "required": ["c", "b"]});
        let first = arguments_start(&s);
        assert!(first == r#"{"b":"# || first == r#"{"c":"#, "{first}");
    }

    #[test]
    fn the_next_required_key_follows_the_comma_that_ends_a_value() {
        let mut event = timer();
        event.name = "add_event".into();
        event.parameters = r#"{"type":"object","properties":{"title":{"type":"string"},"date":{"type":"string"},"minutes":{"type":"integer"}},"required":["title","date"]}"#.into();
        let c = constraint(&req(vec![timer(), event.clone()], ToolChoice::Required)).unwrap();
        let cont = |t: &str| c.continuation(t);
        // The keys in the grammar's order (the schema map's: sorted or as written, depending
        // on serde_json's features in this build).
        let keys = required_keys(&serde_json::from_str(&event.parameters).unwrap());
        let (k1, k2) = (&keys[0], &keys[1]);
        // The name's rest, then the first key.
        assert_eq!(
            cont(r#"{"name": "add_event"#),
            Some(format!(r#"", "parameters": {{"{k1}":"#))
        );
        assert_eq!(
            cont(r#"{"name": "add_ev"#),
            None,
            "the name is not whole yet"
        );
        // A comma inside the first value is not its end; the one after it is.
        let start =
            format!(r#"{{"name": "add_event", "parameters": {{"{k1}": "Lunch, with \"Sam\"""#);
        assert_eq!(cont(&start), None);
        assert_eq!(cont(&format!("{start},")), Some(format!(r#" "{k2}":"#)));
        assert_eq!(cont(&format!("{start}, \"")), Some(format!(r#"{k2}":"#)));
        assert_eq!(cont(&format!("{start}, \"{k2}\":")), None, "written");
        // After the last required key the rest is the model's (an optional key, or the end).
        assert_eq!(cont(&format!("{start}, \"{k2}\": \"friday\",")), None);
        assert_eq!(cont(&format!("{start}, \"{k2}\": \"friday\"}}")), None);
    }

    #[test]
    fn bad_tool_requests_are_bad_requests() {
        let mut broken = timer();
        broken.parameters = "{not json".into();
        for (r, what) in [
            (req(vec![broken], ToolChoice::Required), "not valid JSON"),
            (req(vec![], ToolChoice::Required), "lists no tools"),
            (req(vec![timer(), timer()], ToolChoice::Required), "twice"),
            (
                req(vec![timer()], ToolChoice::Tool("nope".into())),
                "not among",
            ),
        ] {
            let e = constraint(&r).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains(what), "{e}");
        }
    }

    #[test]
    fn calls_parse() {
        let c = parse_call(r#" {"name": "set_timer", "parameters": {"minutes": 7}} "#).unwrap();
        assert_eq!(c.name, "set_timer");
        assert_eq!(c.arguments, r#"{"minutes":7}"#);
        assert!(parse_call(r#"{"name": "set_ti"#).is_err());
    }
}
