/**
 * Turn AWS SDK failures into UplinkErrors that say which role and which IAM action failed,
 * so the vendor sees "AccessDenied on sts:AssumeRole for arn:...:role/UplinkDeploy: the
 * trust policy or the agent's task role does not allow it" instead of a raw SDK error.
 */
import { UplinkError } from '../../shared/errors.js';

const ACCESS_DENIED = new Set([
  'AccessDenied',
  'AccessDeniedException',
  'UnauthorizedOperation',
  'InvalidClientTokenId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'ExpiredTokenException',
]);
const NOT_FOUND = new Set(['NoSuchEntity', 'NoSuchEntityException']);
const THROTTLED = new Set(['Throttling', 'ThrottlingException', 'TooManyRequestsException', 'RequestLimitExceeded']);
const NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'TimeoutError']);

interface SdkErrorShape {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number; requestId?: string };
}

/** What was being attempted, for the message. */
export interface AwsAction {
  /** IAM action, e.g. "sts:AssumeRole" or "iam:ListRoleTags". */
  action: string;
  /** The role ARN the action was about. */
  role: string;
  /** Whose credentials made the call, e.g. "the agent's base credentials (task role)". */
  caller: string;
}

/** Map any error thrown by an AWS SDK call into an UplinkError naming role and action. */
export function awsError(err: unknown, what: AwsAction): UplinkError {
  if (err instanceof UplinkError) return err;
  const e = (err ?? {}) as SdkErrorShape;
  const awsCode = e.name && e.name !== 'Error' ? e.name : (e.Code ?? e.code ?? 'Unknown');
  const status = e.$metadata?.httpStatusCode;
  const awsMessage = e.message ?? String(err);
  const details = { role: what.role, action: what.action, awsCode, ...(status ? { awsStatus: status } : {}), ...(e.$metadata?.requestId ? { awsRequestId: e.$metadata.requestId } : {}) };
  if (ACCESS_DENIED.has(awsCode)) {
    return new UplinkError(
      'UPLINK_ERR_AWS_ACCESS_DENIED',
      `AWS denied ${what.action} on ${what.role} to ${what.caller} (${awsCode}: ${awsMessage}). ` +
        'Check the role trust policy, the approval tags it enforces and the policy of the calling identity (docs/customer-guide.md).',
      { details, cause: err },
    );
  }
  if (NOT_FOUND.has(awsCode)) {
    return new UplinkError('UPLINK_ERR_AWS_ROLE_NOT_FOUND', `${what.action} failed: role ${what.role} does not exist in the customer account (${awsMessage})`, { details, cause: err });
  }
  if (e.name === 'CredentialsProviderError') {
    return new UplinkError(
      'UPLINK_ERR_AWS_UNAVAILABLE',
      `${what.action} on ${what.role}: no AWS credentials for ${what.caller} (${awsMessage}); on ECS the task role provides them`,
      { details, cause: err },
    );
  }
  const retryable = THROTTLED.has(awsCode) || NETWORK.has(awsCode) || NETWORK.has(e.code ?? '') || (status !== undefined && status >= 500) || status === undefined;
  if (retryable) {
    return new UplinkError('UPLINK_ERR_AWS_UNAVAILABLE', `${what.action} on ${what.role} failed: AWS is unavailable or throttling (${awsCode}: ${awsMessage}); retry shortly`, { details, cause: err });
  }
  return new UplinkError('UPLINK_ERR_INTERNAL', `${what.action} on ${what.role} was rejected by AWS (${awsCode}: ${awsMessage})`, { details, cause: err });
}
