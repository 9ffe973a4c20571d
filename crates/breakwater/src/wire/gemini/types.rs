//! Gemini `generateContent` wire types (camelCase on the wire).

use crate::types::Extra;
use crate::types::de::deserialize_with_extra;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST models/{model}:generateContent` body.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    /// The conversation.
    pub contents: Vec<GeminiContent>,
    /// System prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<GeminiContent>,
    /// Sampling and output settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    /// Tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<GeminiTool>>,
    /// Tool calling mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<Value>,
    /// Everything else (`safetySettings`, `cachedContent`…).
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(GenerateContentRequest {
    contents: "contents" => default,
    system_instruction: "systemInstruction" => default,
    generation_config: "generationConfig" => default,
    tools: "tools" => default,
    tool_config: "toolConfig" => default,
});

/// One turn: a role (`user` or `model`) and parts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GeminiContent {
    /// `user` or `model`; absent in system instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The parts.
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// A part: text, inline data, a file, a function call or response.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// Text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `{mimeType, data}` (base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Value>,
    /// `{mimeType, fileUri}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_data: Option<Value>,
    /// A call the model makes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallPart>,
    /// A tool's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponsePart>,
    /// Whether this text is the model's thinking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// Everything else (`thoughtSignature`…).
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(Part {
    text: "text" => default,
    inline_data: "inlineData" => default,
    file_data: "fileData" => default,
    function_call: "functionCall" => default,
    function_response: "functionResponse" => default,
    thought: "thought" => default,
});

impl Part {
    /// A text part.
    pub fn text(t: impl Into<String>) -> Self {
        Part {
            text: Some(t.into()),
            ..Default::default()
        }
    }
}

/// `functionCall`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FunctionCallPart {
    /// Call id (newer API versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Function name.
    pub name: String,
    /// Arguments object.
    #[serde(default)]
    pub args: Value,
}

/// `functionResponse`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FunctionResponsePart {
    /// Call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Function name.
    pub name: String,
    /// The result object.
    #[serde(default)]
    pub response: Value,
}

/// `generationConfig`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    /// Temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Token cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Number of candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    /// Seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Presence penalty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// `application/json` for JSON output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    /// OpenAPI-subset schema (older field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
    /// Full JSON Schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
    /// Everything else (`thinkingConfig`…).
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(GenerationConfig {
    temperature: "temperature" => default,
    top_p: "topP" => default,
    top_k: "topK" => default,
    max_output_tokens: "maxOutputTokens" => default,
    stop_sequences: "stopSequences" => default,
    candidate_count: "candidateCount" => default,
    seed: "seed" => default,
    presence_penalty: "presencePenalty" => default,
    frequency_penalty: "frequencyPenalty" => default,
    response_mime_type: "responseMimeType" => default,
    response_schema: "responseSchema" => default,
    response_json_schema: "responseJsonSchema" => default,
});

/// A tool: function declarations (other tool kinds pass through in `extra`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GeminiTool {
    /// Functions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_declarations: Option<Vec<FunctionDeclaration>>,
    /// Everything else (`googleSearch`, `codeExecution`…).
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(GeminiTool {
    function_declarations: "functionDeclarations" => default,
});

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    /// Name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// OpenAPI-subset schema (older field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Full JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
}

/// A response, complete or one streamed piece.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    /// Candidates (usually one).
    pub candidates: Vec<Candidate>,
    /// Usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    /// Model version that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Response id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// Why a prompt was blocked (`{blockReason}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(GenerateContentResponse {
    candidates: "candidates" => default,
    usage_metadata: "usageMetadata" => default,
    model_version: "modelVersion" => default,
    response_id: "responseId" => default,
    prompt_feedback: "promptFeedback" => default,
});

/// One candidate answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// The content (absent when blocked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<GeminiContent>,
    /// `STOP`, `MAX_TOKENS`, `SAFETY`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Candidate index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Everything else (`safetyRatings`…).
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(Candidate {
    content: "content" => default,
    finish_reason: "finishReason" => default,
    index: "index" => default,
});

/// `usageMetadata`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_token_count: u32,
    /// Answer tokens.
    #[serde(default)]
    pub candidates_token_count: u32,
    /// Sum.
    #[serde(default)]
    pub total_token_count: u32,
    /// Thinking tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u32>,
    /// Prompt tokens served from the context cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content_token_count: Option<u32>,
}

/// `batchEmbedContents` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEmbedRequest {
    /// One request per input.
    pub requests: Vec<EmbedContentRequest>,
}

/// One embedding request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedContentRequest {
    /// `models/{model}`.
    pub model: String,
    /// The text.
    pub content: GeminiContent,
    /// Output size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dimensionality: Option<u32>,
}

/// `batchEmbedContents` response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BatchEmbedResponse {
    /// One embedding per request.
    #[serde(default)]
    pub embeddings: Vec<ContentEmbedding>,
}

/// An embedding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContentEmbedding {
    /// The vector.
    #[serde(default)]
    pub values: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn camel_case_fields_parse_in_place_and_unknown_ones_are_kept() {
        let wire = json!({
            "contents": [{"role": "user", "parts": [{"text": "hi", "thoughtSignature": "sig"}]}],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": {
                "temperature": 0.5, "topP": 0.9, "topK": 40, "maxOutputTokens": 64,
                "stopSequences": ["END"], "candidateCount": 1, "seed": 7,
                "presencePenalty": 0.1, "frequencyPenalty": 0.2,
                "responseMimeType": "application/json", "responseSchema": {"type": "OBJECT"},
                "responseJsonSchema": {"type": "object"}, "thinkingConfig": {"thinkingBudget": 0}
            },
            "tools": [{"functionDeclarations": [{"name": "f"}], "googleSearch": {}}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "safetySettings": []
        });
        let req: GenerateContentRequest = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(req.contents[0].parts[0].text.as_deref(), Some("hi"));
        assert_eq!(req.contents[0].parts[0].extra["thoughtSignature"], "sig");
        let g = req.generation_config.as_ref().unwrap();
        assert_eq!(
            (g.top_p, g.top_k, g.max_output_tokens, g.candidate_count, g.seed),
            (Some(0.9), Some(40), Some(64), Some(1), Some(7))
        );
        assert_eq!(g.stop_sequences.as_deref(), Some(&["END".to_string()][..]));
        assert_eq!((g.presence_penalty, g.frequency_penalty), (Some(0.1), Some(0.2)));
        assert_eq!(g.response_mime_type.as_deref(), Some("application/json"));
        assert!(g.response_schema.is_some() && g.response_json_schema.is_some());
        assert_eq!(g.extra["thinkingConfig"], json!({"thinkingBudget": 0}));
        let tool = &req.tools.as_ref().unwrap()[0];
        assert_eq!(tool.function_declarations.as_ref().unwrap()[0].name, "f");
        assert!(tool.extra.contains_key("googleSearch"));
        assert!(req.tool_config.is_some());
        assert!(req.extra.contains_key("safetySettings"));
        assert_eq!(serde_json::to_value(&req).unwrap(), wire, "and it goes out as it came");
        // Everything is optional; a field given twice is refused.
        let empty: GenerateContentRequest = serde_json::from_str("{}").unwrap();
        assert!(empty.contents.is_empty() && empty.generation_config.is_none());
        let err = serde_json::from_str::<GenerateContentRequest>(r#"{"contents":[],"contents":[]}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate field `contents`"), "{err}");
    }

    #[test]
    fn an_answer_parses_with_its_candidates_usage_and_extras() {
        let wire = json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": "ok"}, {"functionCall": {"name": "f", "args": {"a": 1}}}]},
                "finishReason": "STOP", "index": 0, "safetyRatings": []
            }],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
            "modelVersion": "gemini-x", "responseId": "r1", "promptFeedback": {"blockReason": "OTHER"},
            "createTime": "now"
        });
        let r: GenerateContentResponse = serde_json::from_value(wire.clone()).unwrap();
        let c = &r.candidates[0];
        assert_eq!((c.finish_reason.as_deref(), c.index), (Some("STOP"), Some(0)));
        assert!(c.extra.contains_key("safetyRatings"));
        let parts = &c.content.as_ref().unwrap().parts;
        assert_eq!(parts[1].function_call.as_ref().unwrap().args, json!({"a": 1}));
        assert_eq!(r.usage_metadata.as_ref().unwrap().total_token_count, 5);
        assert_eq!(
            (r.model_version.as_deref(), r.response_id.as_deref()),
            (Some("gemini-x"), Some("r1"))
        );
        assert!(r.prompt_feedback.is_some());
        assert_eq!(r.extra["createTime"], "now");
        assert_eq!(serde_json::to_value(&r).unwrap(), wire);
        let bad = serde_json::from_str::<GenerateContentResponse>(r#"{"candidates":[{"index":"x"}]}"#).unwrap_err();
        assert!(bad.to_string().contains("invalid type"), "{bad}");
    }
}
