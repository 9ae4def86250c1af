/**
 * The two TTFTs, named the same way in every view (and in the README): "queued TTFT" is the seed
 * benchmark's, from the request being queued to its first token (waiting for admission included);
 * "service TTFT" starts when the engine admits (schedules) the request. Tooltips use these lines.
 */
export const TTFT_QUEUED_TITLE = 'queued TTFT: from the request being queued to its first token (waiting for admission included), the seed benchmark’s TTFT';
export const TTFT_SERVICE_TITLE = 'service TTFT: from the engine admitting (scheduling) the request to its first token';
