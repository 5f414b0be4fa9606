"""Officers: the alert page API (API Gateway REST + Lambda), officer identities
(Cognito user pool + app client, and the HMAC key of lfr-signed tokens in Secrets Manager)
and the officers table (who is assigned to which deployment, and their SNS subscriptions).

Routes (all integrated with the one officer API function):
- `GET  /alert/{deployment_id}/{alert_id}`: the static page; it holds no alert data, so no authorizer.
- `GET  /alerts/{deployment_id}/{alert_id}`, `POST .../decision`: Cognito user pool authorizer;
  the function reads `custom:officer_id` / `custom:deployment_id` from the claims.
- `GET  /t/alerts/{deployment_id}/{alert_id}`, `POST .../decision`: an lfr-signed token
  (`lfr officers token`), verified by the function (HMAC-SHA256, bound to officer and deployment,
  expiring with the deployment). This is also what the embedded local stack uses, where there is
  no Cognito.
- `GET  /console/{deployment_id}` (static page) and `GET /t/console/{deployment_id}` (its polled
  state, the same token): the van's console (functions/logic/console.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from cdk_nag import RegexAppliesTo
from constructs import Construct

from functions.models.env import OfficerApiEnv
from infra.constants import (
    FAILED_ACCESS_ALARM_PERIOD_S,
    FAILED_ACCESS_ALARM_THRESHOLD,
    METRICS_NAMESPACE,
    OFFICER_API_MEMORY_MB,
    OFFICER_API_RESERVED_CONCURRENCY,
    OFFICER_API_STAGE,
    OFFICER_API_THROTTLE_BURST,
    OFFICER_API_THROTTLE_RPS,
    OFFICER_API_TIMEOUT_S,
    SERVICE_NAME,
)
from infra.constructs.lambda_function import LOG_RETENTION, FunctionSpec, LambdaCode, lfr_function
from infra.constructs.nag import acknowledge, skip_static_checks
from infra.constructs.tables import customer_managed_table

OFFICER_API = FunctionSpec(
    "functions.handlers.officer_api.handler", OFFICER_API_MEMORY_MB, OFFICER_API_TIMEOUT_S,
    OFFICER_API_RESERVED_CONCURRENCY, "Officers' alert page, alert data and decisions",
)
SIGNING_KEY_CHARS = 64
FAILED_ACCESS_METRIC = "FailedAccess"  # = functions.logic.officer_access.FAILED_ACCESS_METRIC (total, no reason)


@dataclass(frozen=True)
class OfficerDeps:
    code: LambdaCode
    deployments: ddb.ITable
    alerts_table: ddb.ITable
    watchlist: s3.IBucket
    alerts_bucket: s3.IBucket
    audit_bucket: s3.IBucket
    crop_queue: sqs.IQueue  # the van's console shows its depth
    key: kms.IKey


@dataclass(frozen=True)
class PageLink:
    """What the match function needs to put a signed link to the alert page in a notification."""

    url: str
    signing_secret: secretsmanager.ISecret


class Officers(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, deps: OfficerDeps) -> None:
        super().__init__(scope, construct_id)
        self.table = self._officers_table(deps.key)
        self.signing_secret = self._signing_key(deps.key)
        self.user_pool, self.app_client = self._identities()
        self.function = self._function(deps)
        self._grant_function(self.function, deps)
        self.api = self._rest_api(deps.key)
        self._routes()
        self.failed_access_alarm = self._failed_access_alarm()
        self.page_link = PageLink(url=self.api.url, signing_secret=self.signing_secret)

    def _officers_table(self, key: kms.IKey) -> ddb.Table:
        # Officers' names and masked channel hints (no member of the public): PITR on.
        return customer_managed_table(
            self,
            "Table",
            key,
            point_in_time_recovery=True,
            partition_key=ddb.Attribute(name="deployment_id", type=ddb.AttributeType.STRING),
            sort_key=ddb.Attribute(name="officer_id", type=ddb.AttributeType.STRING),
        )

    def _signing_key(self, key: kms.IKey) -> secretsmanager.Secret:
        # HMAC key of officer tokens and alert page links; never in the repo or the template.
        secret = secretsmanager.Secret(
            self,
            "SigningKey",
            description="lfr: HMAC-SHA256 key of officer tokens and alert page links",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=SIGNING_KEY_CHARS, exclude_punctuation=True
            ),
            encryption_key=key,
        )
        acknowledge(
            secret,
            "AwsSolutions-SMG4",
            "Rotation would invalidate the tokens of live deployments (<= 12 h); the key is rotated between"
            " deployments by the release process (`aws secretsmanager put-secret-value`).",
        )
        return secret

    def _identities(self) -> tuple[cognito.UserPool, cognito.UserPoolClient]:
        # Officers' identities in AWS: admin-created only, MFA, custom claims bind them to a deployment.
        user_pool = cognito.UserPool(
            self,
            "UserPool",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12, require_digits=True, require_lowercase=True, require_symbols=True, require_uppercase=True
            ),
            account_recovery=cognito.AccountRecovery.NONE,
            custom_attributes={
                "officer_id": cognito.StringAttribute(min_len=3, max_len=64, mutable=True),
                "deployment_id": cognito.StringAttribute(min_len=3, max_len=64, mutable=True),
            },
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            user_pool,
            "AwsSolutions-COG8",
            "Accounts are created by admins only (no self sign-up), MFA is required and each account is bound"
            " to one deployment for hours; threat protection (Plus plan) is a per-force purchasing decision.",
        )
        app_client = user_pool.add_client(
            "PhoneApp",
            generate_secret=False,  # a phone app cannot keep a client secret
            auth_flows=cognito.AuthFlow(user_srp=True),
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.hours(12),
            prevent_user_existence_errors=True,
        )
        return user_pool, app_client

    def _function(self, d: OfficerDeps) -> lambda_.Function:
        return lfr_function(
            self, "Api", spec=OFFICER_API, env_model=OfficerApiEnv, code=d.code, key=d.key, log_group_id="FnLogs",
            env={
                "deployments_table": d.deployments.table_name,
                "watchlist_bucket": d.watchlist.bucket_name,
                "alerts_table": d.alerts_table.table_name,
                "officers_table": self.table.table_name,
                "alerts_bucket": d.alerts_bucket.bucket_name,
                "signing_secret_arn": self.signing_secret.secret_arn,
                "audit_bucket": d.audit_bucket.bucket_name,
                "crop_queue_url": d.crop_queue.queue_url,
            },
        )

    def _grant_function(self, fn: lambda_.Function, d: OfficerDeps) -> None:
        # The console shows the crop queue's depth: its attributes only, never a message.
        d.crop_queue.grant(fn, "sqs:GetQueueAttributes")
        d.deployments.grant_read_data(fn)
        self.table.grant_read_data(fn)
        # Decisions: UpdateItem on the alerts table only (plus reads), no deletes.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"],
                resources=[d.alerts_table.table_arn],
            )
        )
        # Presigned GETs are signed with the function's role: it may read exactly the evidence
        # shown on the page, the matched crop and the enrolment image, nothing else.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[
                    d.alerts_bucket.arn_for_objects("alerts/*"),
                    d.watchlist.arn_for_objects("deployments/*/watchlist/images/*"),
                ],
            )
        )
        # The data key: read the buckets and tables, and write a decision to the alerts table (on that key).
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"], resources=[d.key.key_arn]
            )
        )
        self.signing_secret.grant_read(fn)
        acknowledge(
            fn,
            "AwsSolutions-IAM5",
            "Read-only access to alert crops (alerts/) and enrolment images (deployments/<id>/watchlist/images/):"
            " object keys carry per-deployment ids unknown at deploy time.",
            applies_to=[
                RegexAppliesTo(regex=r"/^Resource::<StorageAlerts[0-9A-F]+\.Arn>\/alerts\/\*$/g"),
                RegexAppliesTo(
                    regex=r"/^Resource::<StorageWatchlist[0-9A-F]+\.Arn>\/deployments\/\*\/watchlist\/images\/\*$/g"
                ),
            ],
        )

    def _rest_api(self, key: kms.IKey) -> apigw.RestApi:
        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.RETAIN, encryption_key=key
        )
        api = apigw.RestApi(
            self,
            "RestApi",
            description="lfr officers: alert page and decisions",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            deploy_options=apigw.StageOptions(
                stage_name=OFFICER_API_STAGE,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=True,
                ),
                # Errors only, never request data: the events carry bearer tokens.
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                tracing_enabled=True,
                throttling_rate_limit=OFFICER_API_THROTTLE_RPS,
                throttling_burst_limit=OFFICER_API_THROTTLE_BURST,
            ),
        )
        acknowledge(
            api,
            "AwsSolutions-IAM4",
            "API Gateway's account-level CloudWatch role (AmazonAPIGatewayPushToCloudWatchLogs) only writes logs.",
            applies_to=[
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
            ],
        )
        skip_static_checks(
            api.deployment_stage,
            {"CKV_AWS_120": "No caching: every response is for one officer and holds short-lived presigned URLs"
             " (Cache-Control: no-store); a cache would serve one officer's alert to another."},
        )
        acknowledge(
            api,
            "AwsSolutions-APIG3",
            "Regional API with stage throttling; WAF is attached per force (shared web ACLs), not per app.",
        )
        return api

    def _routes(self) -> None:
        """The alert page; its data and decisions, by Cognito and by lfr token; the van's console."""
        self._integration = apigw.LambdaIntegration(self.function, proxy=True)
        # Path parameters are required at the gateway; the body (one enum field) is validated in the function.
        self._validator = self.api.add_request_validator(
            "Validate", validate_request_parameters=True, validate_request_body=True
        )
        self._authorizer = apigw.CognitoUserPoolsAuthorizer(self, "Authorizer", cognito_user_pools=[self.user_pool])
        page = self.api.root.add_resource("alert").add_resource("{deployment_id}").add_resource("{alert_id}")
        self._alert_method(page, "GET", cognito_auth=False)
        self._alert_routes(self.api.root.add_resource("alerts"), cognito_auth=True)
        token_root = self.api.root.add_resource("t")
        self._alert_routes(token_root.add_resource("alerts"), cognito_auth=False)
        self._console_routes(self.api.root.add_resource("console"), token_root.add_resource("console"))

    def _alert_routes(self, root: apigw.IResource, *, cognito_auth: bool) -> None:
        one = root.add_resource("{deployment_id}").add_resource("{alert_id}")
        self._alert_method(one, "GET", cognito_auth=cognito_auth)
        self._alert_method(one.add_resource("decision"), "POST", cognito_auth=cognito_auth)

    def _alert_method(self, resource: apigw.IResource, verb: str, *, cognito_auth: bool) -> None:
        m = resource.add_method(
            verb,
            self._integration,
            request_parameters={"method.request.path.deployment_id": True, "method.request.path.alert_id": True},
            request_validator=self._validator,
            **(
                {"authorizer": self._authorizer, "authorization_type": apigw.AuthorizationType.COGNITO}
                if cognito_auth
                else {"authorization_type": apigw.AuthorizationType.NONE}
            ),
        )
        if not cognito_auth:
            acknowledge(
                m,
                "AwsSolutions-APIG4",
                "No API Gateway authorizer by design: the page route serves static HTML holding no alert"
                " data; the /t/ routes are authorised in the function by an HMAC-signed token bound to"
                " officer and deployment that expires with the deployment.",
            )
            acknowledge(m, "AwsSolutions-COG4", "Authorised by the lfr-signed token in the function (see APIG4).")
            skip_static_checks(
                m,
                {"CKV_AWS_59": "No API Gateway authorizer by design (see AwsSolutions-APIG4): the page is static"
                 " HTML, the /t/ routes verify an HMAC-signed, deployment-bound token in the function."},
            )

    def _console_routes(self, *parents: apigw.IResource) -> None:
        """The van's console: a static page and its token-authorised state, one deployment each."""
        for parent in parents:
            m = parent.add_resource("{deployment_id}").add_method(
                "GET", self._integration, request_parameters={"method.request.path.deployment_id": True},
                request_validator=self._validator, authorization_type=apigw.AuthorizationType.NONE,
            )
            acknowledge(
                m,
                "AwsSolutions-APIG4",
                "No API Gateway authorizer by design: the page is static; its state route is authorised in the"
                " function by the HMAC-signed officer token bound to the deployment (see the /t/ alert routes).",
            )
            acknowledge(m, "AwsSolutions-COG4", "Authorised by the lfr-signed token in the function (see APIG4).")
            skip_static_checks(
                m,
                {"CKV_AWS_59": "No API Gateway authorizer by design (see AwsSolutions-APIG4): the console page is"
                 " static, its state route verifies the HMAC-signed, deployment-bound token in the function."},
            )

    def _failed_access_alarm(self) -> cloudwatch.Alarm:
        # Refused requests (functions/logic/officer_access.py): each is counted, only identified ones audited.
        return cloudwatch.Alarm(
            self,
            "FailedAccessAlarm",
            metric=cloudwatch.Metric(
                namespace=METRICS_NAMESPACE,
                metric_name=FAILED_ACCESS_METRIC,
                dimensions_map={"service": SERVICE_NAME},
                statistic="Sum",
                period=Duration.seconds(FAILED_ACCESS_ALARM_PERIOD_S),
            ),
            threshold=FAILED_ACCESS_ALARM_THRESHOLD,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="Many refused requests to the officers' API: someone is probing it (see the"
            " FailedAccess metric by reason and the API access log)",
        )
