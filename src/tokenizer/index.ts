// Public API of the text side: tokenizer, chat template, streaming detokenizer.
export { QwenTokenizer, type EncodeOptions, type DecodeOptions, type TokenizerFiles } from './tokenizer.js';
export {
  applyChatTemplate,
  validateMessages,
  CHAT_ROLES,
  ChatTemplateError,
  type ChatMessage,
  type ChatTemplateOptions,
  type ToolCall,
} from './chat-template.js';
export { StreamDecoder, type StreamDecoderOptions, type Decoder } from './detokenizer.js';
